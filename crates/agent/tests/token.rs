//! Join tokens: the node's secret and the control plane's CA fingerprint,
//! one copy-pasteable string.

use agent::tls::{JoinToken, Pin};

#[test]
fn a_join_token_is_the_secret_a_dot_and_the_ca_fingerprint_and_reads_back_as_printed() {
    let token = JoinToken { secret: "ocn_00ff".to_owned(), pin: Pin::of(b"a CA's DER") };
    let printed = token.to_string();
    assert_eq!(printed, format!("ocn_00ff.{}", hex::encode(Pin::of(b"a CA's DER").0)));
    assert_eq!(printed.parse::<JoinToken>().unwrap(), token);
}

#[test]
fn a_token_without_a_fingerprint_or_with_a_malformed_one_is_refused_saying_why() {
    let no_pin = "ocn_00ff".parse::<JoinToken>().unwrap_err();
    assert!(no_pin.contains("SECRET.FINGERPRINT"), "{no_pin}");
    let short = "ocn_00ff.abcd".parse::<JoinToken>().unwrap_err();
    assert!(short.contains("64 hexadecimal digits"), "{short}");
    let bad_secret = format!("ocn 00ff.{}", "0".repeat(64)).parse::<JoinToken>().unwrap_err();
    assert!(bad_secret.contains("secret"), "{bad_secret}");
}
