//! A plugin that misbehaves on purpose, for the sandbox and failure tests:
//! the MRN of a `patient.created` event says how. Any other MRN is handled normally, so a
//! test can show that the host goes on after each attack.

use projector_sdk::events::Payload;
use projector_sdk::log::{self, Level};
use projector_sdk::{Event, Outcome, Plugin, PluginInfo, ViewDef, Views, json};

/// Patients this plugin handled normally (or whose attack did not stop it).
pub const SEEN: &str = "hostile_seen";

/// The misbehaving plugin.
pub struct Hostile;

impl Plugin for Hostile {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "hostile",
            env!("CARGO_PKG_VERSION"),
            &["patient.created"],
            vec![ViewDef::new(SEEN, "patientId", &[])],
        )
    }

    fn handle(event: &Event, _views: &dyn Views) -> Result<Outcome, String> {
        let Payload::PatientCreated(p) = &event.payload else {
            return Ok(Outcome::default());
        };
        let mut out = Outcome::default();
        let mut seen = json!({ "patientId": event.patient_id, "mrn": p.mrn });
        match p.mrn.as_str() {
            "loop" => spin(),
            "alloc" => hoard(),
            "panic" => panic!("hostile plugin panics on purpose"),
            "file" => {
                let read = std::fs::read_to_string("/etc/passwd");
                seen["leaked"] = json!(read.is_ok());
                read.map_err(|e| format!("opening a file failed: {e}"))?;
            }
            "socket" => {
                let connected = std::net::TcpStream::connect("127.0.0.1:5432");
                seen["leaked"] = json!(connected.is_ok());
                connected.map_err(|e| format!("opening a socket failed: {e}"))?;
            }
            "log" => {
                for i in 0..10_000 {
                    log::write(Level::Info, &format!("flooding the log, line {i}"));
                }
            }
            // Outcomes over the host's limits, or that it cannot store.
            "deep-path" => {
                out.increment(SEEN, &event.patient_id, &vec!["a"; 100_000].join("."), 1);
            }
            "many-mutations" => {
                for i in 0..5_000 {
                    out.increment(SEEN, &event.patient_id, &format!("n{i}"), 1);
                }
            }
            "nul" => seen["name"] = json!("a\u{0}b"),
            "huge" => seen["padding"] = json!("x".repeat(5 << 20)),
            // 900 KiB more each time: the fifth takes the document over 4 MiB.
            "grow" => {
                out.append(
                    SEEN,
                    &event.patient_id,
                    "padding",
                    json!("x".repeat(900 << 10)),
                    None,
                );
                return Ok(out);
            }
            // Writes an audit action it did not declare, under someone
            // else's name.
            "forge-audit" => {
                out.audit_as(
                    "u-someone-else",
                    "chart.deleted",
                    "Patient",
                    &event.patient_id,
                );
            }
            // Takes over another patient's document.
            mrn if mrn.starts_with("move:") => {
                let victim = &mrn["move:".len()..];
                out.merge(SEEN, victim, json!({ "patientId": event.patient_id }));
            }
            _ => {}
        }
        out.upsert(SEEN, &event.patient_id, seen);
        Ok(out)
    }
}

/// Never returns.
fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

/// Allocates until the host refuses more memory.
fn hoard() -> ! {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(std::hint::black_box(vec![1u8; 1 << 20]));
    }
}

projector_sdk::export_plugin!(Hostile);
