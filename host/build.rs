//! Builds the clinician console (console/, TypeScript with Vite) so the
//! binary can embed it: `cargo build --release` gives a host that serves it
//! with nothing else to install or run. `PROJECTOR_CONSOLE_DIST` names a
//! console built beforehand instead (the Dockerfile builds it in a Node
//! stage). On a machine without npm the host is built with a page that says
//! the console was not built, and cargo warns; where npm is, a console that
//! fails to build fails the build.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let console = Path::new(env!("CARGO_MANIFEST_DIR")).join("../console");
    for watched in [
        "src",
        "index.html",
        "package.json",
        "package-lock.json",
        "vite.config.ts",
        "tsconfig.json",
    ] {
        println!("cargo:rerun-if-changed={}", console.join(watched).display());
    }
    println!("cargo:rerun-if-env-changed=PROJECTOR_CONSOLE_DIST");
    let dist = match std::env::var("PROJECTOR_CONSOLE_DIST") {
        Ok(prebuilt) => PathBuf::from(prebuilt),
        Err(_) => build(&console, &out.join("console")),
    };
    println!("cargo:rustc-env=PROJECTOR_CONSOLE_DIR={}", dist.display());
}

/// Runs the console's build into `dist`; on failure, writes the page that
/// says so.
fn build(console: &Path, dist: &Path) -> PathBuf {
    let npm = |args: &[&str]| {
        Command::new("npm")
            .args(args)
            .current_dir(console)
            .status()
            .map_err(|e| format!("npm could not be run: {e}"))
            .and_then(|status| {
                status
                    .success()
                    .then_some(())
                    .ok_or_else(|| format!("npm {} failed ({status})", args.join(" ")))
            })
    };
    let installed = if console.join("node_modules/.bin/vite").exists() {
        Ok(())
    } else {
        npm(&["ci", "--no-audit", "--no-fund", "--loglevel=error"])
    };
    let built = installed.and_then(|()| {
        npm(&[
            "run",
            "--silent",
            "build",
            "--",
            "--outDir",
            &dist.display().to_string(),
            "--emptyOutDir",
        ])
    });
    if let Err(reason) = built {
        let npm_present = Command::new("npm").arg("--version").output().is_ok();
        assert!(
            !npm_present,
            "the clinician console did not build: {reason}"
        );
        println!("cargo:warning=the clinician console was not built: {reason}");
        std::fs::create_dir_all(dist).expect("OUT_DIR is writable");
        std::fs::write(
            dist.join("index.html"),
            format!(
                "<!doctype html><title>Projector</title><h1>The console was not built</h1>\
                 <p>This host was built without it: {reason}. Install Node.js 20 and npm, then build again.</p>"
            ),
        )
        .expect("OUT_DIR is writable");
    }
    dist.to_owned()
}
