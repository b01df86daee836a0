//! Presigned GET URLs on the records that point at objects, so a client
//! fetches images and reports straight from object storage for a short
//! while, without credentials of its own.

use serde_json::Value;

use crate::objects::{BUCKETS, LAB_REPORTS, ObjectStore};

/// The buckets records may point into; never the plugin artifacts'.
fn signable(bucket: &str) -> bool {
    BUCKETS.contains(&bucket) && bucket != "projector-plugins"
}

async fn url(store: &ObjectStore, bucket: &str, key: &str) -> Value {
    if !signable(bucket) {
        return Value::Null;
    }
    store
        .presign_get(bucket, key)
        .await
        .map_or(Value::Null, Value::String)
}

/// Imaging studies: `objectUrls` beside `objectKeys`, and a `url` on each
/// uploaded image.
pub async fn sign_studies(store: &ObjectStore, studies: &mut [Value]) {
    for study in studies {
        let bucket = study["bucket"].as_str().unwrap_or_default().to_owned();
        let keys: Vec<String> = study["objectKeys"]
            .as_array()
            .map(|keys| {
                keys.iter()
                    .filter_map(|k| k.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let mut urls = Vec::with_capacity(keys.len());
        for key in &keys {
            urls.push(url(store, &bucket, key).await);
        }
        if let Some(study) = study.as_object_mut()
            && !keys.is_empty()
        {
            study.insert("objectUrls".into(), Value::Array(urls));
        }
        if let Some(images) = study.get_mut("images").and_then(Value::as_array_mut) {
            for image in images {
                let (Some(bucket), Some(key)) = (image["bucket"].as_str(), image["key"].as_str())
                else {
                    continue;
                };
                let signed = url(store, bucket, key).await;
                if let Some(image) = image.as_object_mut() {
                    image.insert("url".into(), signed);
                }
            }
        }
    }
}

/// Lab results: `reportUrl`, the report's PDF where a lab system stores it,
/// `lab-reports/<patientId>/<reportId>.pdf`.
pub async fn sign_lab_reports(store: &ObjectStore, results: &mut [Value]) {
    for result in results {
        let (Some(patient), Some(report)) =
            (result["patientId"].as_str(), result["reportId"].as_str())
        else {
            continue;
        };
        let signed = url(store, LAB_REPORTS, &format!("{patient}/{report}.pdf")).await;
        if let Some(result) = result.as_object_mut() {
            result.insert("reportUrl".into(), signed);
        }
    }
}
