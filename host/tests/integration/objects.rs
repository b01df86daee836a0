//! Object storage against a real S3 server (s3s-fs): the host's buckets,
//! presigned URLs on imaging and lab records, and a host that keeps
//! projecting while S3 is down.

use std::time::Duration;

use crate::common::{SEED, TestEnv, assert_seed_chart, eventually};
use projector::objects::{BUCKETS, ObjectStore};

const IMAGE: &str = "p-john-doe/study-1/img-1.dcm";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_are_fetched_through_presigned_urls_that_expire() {
    let mut env = TestEnv::new("objects").await;
    let _s3 = env.with_s3().await;
    env.config.presign_ttl = Duration::from_secs(3);
    env.publish(SEED).await;
    let host = env.start().await;
    env.settle(&host).await;

    // The host made its buckets.
    let store = ObjectStore::new(&env.config);
    let names = eventually("the buckets made", || async {
        let listed = store.client().list_buckets().send().await.ok()?;
        let names: Vec<String> = listed
            .buckets()
            .iter()
            .filter_map(|b| b.name().map(str::to_owned))
            .collect();
        (names.len() >= BUCKETS.len()).then_some(names)
    })
    .await;
    for bucket in BUCKETS {
        assert!(names.iter().any(|n| n == bucket), "{bucket} in {names:?}");
    }
    let (status, ready) = env.get(&host, "/readyz", None).await;
    assert_eq!(
        (status, &ready["status"], &ready["checks"]["s3"]),
        (200, &"ready".into(), &true.into())
    );

    // A radiology system stored an image; the study's record points at it.
    let image = b"DICM not really a DICOM file".to_vec();
    store
        .client()
        .put_object()
        .bucket("radiology-images")
        .key(IMAGE)
        .body(image.clone().into())
        .send()
        .await
        .expect("upload");
    let token = env.token("u-dr-smith", "provider");
    let (status, studies) = env
        .get(
            &host,
            "/api/aggregate/patients/p-john-doe/imaging",
            Some(&token),
        )
        .await;
    assert_eq!(status, 200);
    let study = &studies[0];
    assert_eq!(study["objectKeys"][0], IMAGE);
    let url = study["objectUrls"][0]
        .as_str()
        .expect("a presigned URL")
        .to_owned();
    assert!(url.contains("X-Amz-Signature="), "{url}");
    assert!(
        url.starts_with(&env.config.s3_public_endpoint),
        "signed for where clients reach S3: {url}"
    );
    assert_eq!(
        study["images"][0]["url"]
            .as_str()
            .map(|u| u.contains(IMAGE)),
        Some(true)
    );
    let (_, labs) = env
        .get(
            &host,
            "/api/aggregate/patients/p-john-doe/labs",
            Some(&token),
        )
        .await;
    assert!(
        labs[0]["reportUrl"]
            .as_str()
            .is_some_and(|u| u.contains("lab-reports/p-john-doe/rep-lab-1.pdf"))
    );

    let fetched = reqwest::get(&url).await.expect("GET");
    assert_eq!(fetched.status().as_u16(), 200);
    assert_eq!(fetched.bytes().await.unwrap().as_ref(), image.as_slice());
    // Without a signature the bucket is closed.
    let anonymous = reqwest::get(format!(
        "{}/radiology-images/{IMAGE}",
        env.config.s3_endpoint
    ))
    .await
    .expect("GET");
    assert_eq!(anonymous.status().as_u16(), 403);
    // And the signature expires.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let expired = reqwest::get(&url).await.expect("GET");
    assert_eq!(expired.status().as_u16(), 403);

    host.stop();
}

/// Issue 14: an imaging event names any bucket and key; only the record's
/// own patient's objects in the imaging bucket are signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_records_own_objects_are_signed() {
    let mut env = TestEnv::new("objects_scope").await;
    let _s3 = env.with_s3().await;
    let study = |id: &str, study: &str, bucket: &str, keys: &[&str]| {
        serde_json::json!({
            "eventId": id, "eventType": "radiology.study.complete", "eventVersion": 1,
            "timestamp": "2026-11-26T10:05:00Z", "patientId": "p-john-doe", "userId": "u-rad-tech-1",
            "portalType": "radiology", "fhirResourceType": "ImagingStudy",
            "payload": {"studyId": study, "orderId": "ord-x", "modality": "CT",
                        "description": "CT", "imageCount": keys.len(), "bucket": bucket,
                        "objectKeys": keys}
        })
        .to_string()
    };
    let events = [
        study(
            "scope-1",
            "study-docs",
            "patient-documents",
            &["p-john-doe/a.dcm"],
        ),
        study(
            "scope-2",
            "study-mixed",
            "radiology-images",
            &[
                "p-someone-else/x.dcm",
                "p-john-doe/../p-someone-else/x.dcm",
                "p-john-doe/study-mixed/ok.dcm",
            ],
        ),
    ];
    env.publish(&events.join("\n")).await;
    let host = env.start().await;
    env.settle(&host).await;
    let token = env.token("u-dr-smith", "provider");
    let (status, studies) = env
        .get(
            &host,
            "/api/aggregate/patients/p-john-doe/imaging",
            Some(&token),
        )
        .await;
    assert_eq!(status, 200, "{studies}");
    let urls = |id: &str| {
        studies
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["studyId"] == id)
            .map(|s| s["objectUrls"].clone())
            .unwrap_or_default()
    };
    assert_eq!(urls("study-docs"), serde_json::json!([null]));
    let mixed = urls("study-mixed");
    assert!(mixed[0].is_null() && mixed[1].is_null(), "{mixed}");
    assert!(
        mixed[2]
            .as_str()
            .is_some_and(|u| u.contains("p-john-doe/study-mixed/ok.dcm")),
        "{mixed}"
    );
    host.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_object_storage_the_host_is_degraded_and_projects() {
    let env = TestEnv::new("objects_down").await;
    env.publish(SEED).await;
    let host = env.start().await;
    env.settle(&host).await;
    let (status, ready) = env.get(&host, "/readyz", None).await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["status"], "degraded");
    assert_eq!(ready["checks"]["s3"], false);
    let token = env.token("u-dr-smith", "provider");
    let (_, chart) = env
        .get(&host, "/api/aggregate/patients/p-john-doe", Some(&token))
        .await;
    assert_seed_chart(&chart);
    let (status, studies) = env
        .get(
            &host,
            "/api/aggregate/patients/p-john-doe/imaging",
            Some(&token),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(studies[0]["objectKeys"][0], IMAGE);
    host.stop();
}
