//! Presigned GET URLs on the records that point at objects, so a client
//! fetches images and reports straight from object storage for a short
//! while, without credentials of its own.

use serde_json::Value;

use crate::objects::{LAB_REPORTS, ObjectStore, RADIOLOGY_IMAGES};

/// Whether a record of `patient_id` may have `bucket`/`key` signed: only in
/// the bucket of the record's kind, and only under the patient's own prefix
/// `<patientId>/`, with no `.`, `..` or empty segment (an S3 server on a
/// filesystem may resolve them). An event naming another patient's object,
/// another bucket or the plugin artifacts gets no URL.
fn signable(bucket: &str, key: &str, kind_bucket: &str, patient_id: &str) -> bool {
    let Some(rest) = key
        .strip_prefix(patient_id)
        .and_then(|k| k.strip_prefix('/'))
    else {
        return false;
    };
    bucket == kind_bucket
        && !patient_id.is_empty()
        && rest
            .split('/')
            .all(|segment| !matches!(segment, "" | "." | ".."))
}

async fn url(
    store: &ObjectStore,
    bucket: &str,
    key: &str,
    kind_bucket: &str,
    patient_id: &str,
) -> Value {
    if !signable(bucket, key, kind_bucket, patient_id) {
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
        let patient = study["patientId"].as_str().unwrap_or_default().to_owned();
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
            urls.push(url(store, &bucket, key, RADIOLOGY_IMAGES, &patient).await);
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
                let signed = url(store, bucket, key, RADIOLOGY_IMAGES, &patient).await;
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
        let key = format!("{patient}/{report}.pdf");
        let signed = url(store, LAB_REPORTS, &key, LAB_REPORTS, patient).await;
        if let Some(result) = result.as_object_mut() {
            result.insert("reportUrl".into(), signed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::signable;

    #[test]
    fn only_the_patients_own_keys_in_the_kinds_bucket() {
        let ok = |bucket, key| signable(bucket, key, "radiology-images", "p1");
        assert!(ok("radiology-images", "p1/s/img.dcm"));
        assert!(!ok("patient-documents", "p1/s/img.dcm"));
        assert!(!ok("projector-plugins", "p1/s/img.dcm"));
        assert!(!ok("radiology-images", "p2/s/img.dcm"));
        assert!(!ok("radiology-images", "p10/s/img.dcm"));
        assert!(!ok("radiology-images", "p1/../p2/img.dcm"));
        assert!(!ok("radiology-images", "p1//img.dcm"));
        assert!(!ok("radiology-images", "p1/"));
        assert!(!ok("radiology-images", "p1"));
    }
}
