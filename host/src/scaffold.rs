//! `projector plugins new NAME`: a plugin crate that builds to
//! `wasm32-wasip2` with one command and passes its test as generated.
//! (`projector plugins deploy` is the [`crate::client`]'s.)

use std::path::{Path, PathBuf};

use anyhow::Context;
use projector_contract::validate_plugin_name;

use crate::runtime::check_view_name;

/// Where the SDK of this source tree is (the default for `--sdk`).
pub const DEFAULT_SDK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../plugins/sdk");

/// Writes the crate `dir/NAME`; returns its folder. The name follows the
/// plugin-name rule, and the view the plugin is generated with, named after
/// it, must be one the host loads: so no plugin is written that the host
/// would refuse.
pub fn new_plugin(name: &str, dir: &Path, sdk: &Path) -> anyhow::Result<PathBuf> {
    validate_plugin_name(name)?;
    let view = format!("{}_patients", name.replace('-', "_"));
    check_view_name(&view)
        .map_err(|e| anyhow::anyhow!("`{name}` would name the plugin's view `{view}`: {e}"))?;
    let root = dir.join(name);
    anyhow::ensure!(!root.exists(), "{} exists already", root.display());
    let sdk = sdk
        .canonicalize()
        .with_context(|| format!("the SDK at {} (pass --sdk)", sdk.display()))?;
    std::fs::create_dir_all(root.join("src"))?;
    let files = [
        ("Cargo.toml", cargo_toml(name, &sdk)),
        ("src/lib.rs", lib_rs(name, &view)),
        ("README.md", readme(name, &view)),
        (".gitignore", "/target\n".to_owned()),
    ];
    for (file, text) in files {
        std::fs::write(root.join(file), text).with_context(|| format!("writing {file}"))?;
    }
    Ok(root)
}

fn cargo_toml(name: &str, sdk: &Path) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
projector-sdk = {{ path = "{sdk}" }}

# A plugin stands alone, not in the workspace around it.
[workspace]

[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
strip = "debuginfo"
"#,
        sdk = sdk.display()
    )
}

fn lib_rs(name: &str, view: &str) -> String {
    format!(
        r##"//! The `{name}` Projector plugin: keeps `{view}`, one document per
//! patient with their MRN and when they were registered.

use projector_sdk::events::Payload;
use projector_sdk::{{Event, Outcome, Plugin, PluginInfo, ViewDef, Views, json}};

/// The view this plugin writes, keyed by patient id.
pub const PATIENTS: &str = "{view}";

/// The plugin.
pub struct ThisPlugin;

impl Plugin for ThisPlugin {{
    fn describe() -> PluginInfo {{
        PluginInfo::new(
            "{name}",
            env!("CARGO_PKG_VERSION"),
            &["patient.created"],
            vec![ViewDef::new(PATIENTS, "patientId", &[])],
        )
    }}

    fn handle(event: &Event, _views: &dyn Views) -> Result<Outcome, String> {{
        let mut out = Outcome::default();
        if let Payload::PatientCreated(p) = &event.payload {{
            out.upsert(
                PATIENTS,
                &event.patient_id,
                json!({{ "patientId": event.patient_id, "mrn": p.mrn, "registeredAt": event.timestamp.as_str() }}),
            );
        }}
        Ok(out)
    }}
}}

projector_sdk::export_plugin!(ThisPlugin);

#[cfg(test)]
mod tests {{
    use super::*;
    use projector_sdk::testing::Harness;

    #[test]
    fn a_new_patient_gets_a_document() {{
        let mut harness = Harness::<ThisPlugin>::new();
        harness
            .feed_jsonl(r#"{{"eventId":"e-1","eventType":"patient.created","eventVersion":1,"timestamp":"2026-11-26T08:00:00Z","patientId":"p-1","userId":"u-1","portalType":"admin","fhirResourceType":"Patient","payload":{{"mrn":"MRN-1","name":{{"given":"Ada","family":"Lovelace"}},"birthDate":"1815-12-10","gender":"female"}}}}"#)
            .unwrap();
        let doc = harness.view(PATIENTS, "p-1").expect("a document");
        assert_eq!(doc["mrn"], "MRN-1");
    }}
}}
"##
    )
}

fn readme(name: &str, view: &str) -> String {
    format!(
        r#"# {name}

A Projector handler plugin. It keeps the view `{view}`.

```sh
cargo test                                         # the plugin's tests, natively
cargo build --release --target wasm32-wasip2       # the component
projector plugins deploy target/wasm32-wasip2/release/{crate_file}.wasm --name {name} --url http://127.0.0.1:3020 --token "$ADMIN_TOKEN"
```

Or copy the `.wasm` into the host's `PLUGINS_DIR`. See the plugin guide
(`plugins/README.md` in the Projector repository).
"#,
        crate_file = name.replace('-', "_")
    )
}
