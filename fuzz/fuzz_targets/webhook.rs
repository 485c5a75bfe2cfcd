//! The Intercom webhook verifier on any secret, body and signature: never a panic; what
//! `sign` makes verifies, and a changed signature or body does not.
#![no_main]

use intercom_blueprint::webhook::{sign, verify_signature};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // secret \0 body \0 signature
    let mut parts = data.splitn(3, |&b| b == 0);
    let (Some(secret), Some(body)) = (parts.next(), parts.next()) else {
        return;
    };
    let signature = parts
        .next()
        .map(String::from_utf8_lossy)
        .unwrap_or_default();
    let _ = verify_signature(secret, body, &signature);

    let good = sign(secret, body);
    assert_eq!(verify_signature(secret, body, &good), !secret.is_empty());
    if !secret.is_empty() {
        let mut changed = good.clone().into_bytes();
        let last = changed.len() - 1;
        changed[last] = if changed[last] == b'0' { b'1' } else { b'0' };
        let changed = String::from_utf8(changed).unwrap_or_default();
        assert!(!verify_signature(secret, body, &changed));
        let mut other = body.to_vec();
        other.push(b'x');
        assert!(!verify_signature(secret, &other, &good));
    }
});
