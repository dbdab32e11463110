//! A CA and a leaf certificate for `localhost`, made with the openssl CLI
//! (webpki refuses a self-signed end-entity certificate as its own anchor).
//! Used by the submission tests and `benches/submission.rs` (by `#[path]`).

use std::path::{Path, PathBuf};

/// `ca.pem`, `cert.pem` and `key.pem` (P-256, 2 days) in a fresh temp dir
/// named `prefix-<uuid>`; the dir and the CA certificate's PEM.
pub fn make(prefix: &str) -> (PathBuf, Vec<u8>) {
    let dir = std::env::temp_dir().join(format!("{prefix}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    openssl(
        &dir,
        &format!("req -x509 {ec} -keyout ca.key -out ca.pem -days 2 -subj /CN=postline-test-ca"),
    );
    openssl(
        &dir,
        &format!("req {ec} -keyout key.pem -out leaf.csr -subj /CN=localhost"),
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost\nbasicConstraints=critical,CA:FALSE\n",
    )
    .unwrap();
    openssl(
        &dir,
        "x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out cert.pem -days 2 -extfile ext.cnf",
    );
    let ca = std::fs::read(dir.join("ca.pem")).unwrap();
    (dir, ca)
}

/// One openssl command (arguments without spaces of their own) in `dir`.
fn openssl(dir: &Path, args: &str) {
    let out = std::process::Command::new("openssl")
        .args(args.split(' '))
        .current_dir(dir)
        .output()
        .expect("openssl runs (deploy/dev installs it)");
    assert!(
        out.status.success(),
        "openssl {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
