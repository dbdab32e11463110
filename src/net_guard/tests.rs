use super::*;

const STRICT: Guard = Guard {
    allow_private: false,
};
const OPEN: Guard = Guard {
    allow_private: true,
};

#[test]
fn loose_ipv4_spellings_decode_like_inet_aton() {
    let lo = Some(Ipv4Addr::new(127, 0, 0, 1));
    assert_eq!(parse_ipv4_loose("2130706433"), lo);
    assert_eq!(parse_ipv4_loose("0177.0.0.1"), lo);
    assert_eq!(parse_ipv4_loose("0x7f.1"), lo);
    assert_eq!(parse_ipv4_loose("0x7f000001"), lo);
    assert_eq!(parse_ipv4_loose("127.1"), lo);
    assert_eq!(parse_ipv4_loose("127.0.1"), lo);
    assert_eq!(parse_ipv4_loose("017700000001"), lo);
    assert_eq!(parse_ipv4_loose("mail.example.com"), None);
    assert_eq!(parse_ipv4_loose("08.0.0.1"), None);
    assert_eq!(parse_ipv4_loose("256.0.0.1"), None);
    assert_eq!(parse_ipv4_loose("1.2.3.4.5"), None);
    assert_eq!(parse_ipv4_loose("4294967296"), None);
}

#[test]
fn strict_guard_refuses_every_non_public_host() {
    let vectors = [
        "127.0.0.1",
        "127.8.9.10",
        "localhost",
        "api.localhost",
        "0.0.0.0",
        "10.1.2.3",
        "172.16.0.1",
        "172.31.255.254",
        "192.168.1.1",
        "169.254.1.1",
        "100.64.0.1",
        "100.127.255.254",
        "255.255.255.255",
        "224.0.0.1",
        "2130706433",
        "0177.0.0.1",
        "0x7f.1",
        "0x7f.0.0.1",
        "127.1",
        "[::1]",
        "::",
        "[::ffff:127.0.0.1]",
        "::ffff:7f00:1",
        "::ffff:10.0.0.1",
        "::127.0.0.1",
        "64:ff9b::a00:1",
        "2002:7f00:1::",
        "fc00::1",
        "fd12:3456::1",
        "fe80::1",
        "ff02::1",
        "169.254.169.254",
        "fd00:ec2::254",
        "metadata.google.internal",
    ];
    for v in vectors {
        assert!(STRICT.check_host(v).is_err(), "{v} must be refused");
    }
}

#[test]
fn public_hosts_pass() {
    for v in [
        "93.184.216.34",
        "8.8.8.8",
        "hooks.example.com",
        "2606:4700::1111",
        "[2606:4700::1111]",
        "172.32.0.1",
        "100.128.0.1",
    ] {
        assert_eq!(STRICT.check_host(v), Ok(()), "{v}");
    }
    // A public address in a disguised spelling is refused as a disguise.
    assert!(matches!(
        STRICT.check_host("134744072"),
        Err(Refusal::ObfuscatedIpv4(_))
    ));
}

#[test]
fn metadata_is_refused_even_when_private_targets_are_allowed() {
    for v in [
        "169.254.169.254",
        "fd00:ec2::254",
        "[fd00:ec2::254]",
        "::ffff:169.254.169.254",
        "0xa9fea9fe",
        "2852039166",
        "metadata.google.internal",
        "169.254.170.2",
    ] {
        assert!(
            matches!(OPEN.check_host(v), Err(Refusal::Metadata(_))),
            "{v}: {:?}",
            OPEN.check_host(v)
        );
    }
    assert_eq!(OPEN.check_host("127.0.0.1"), Ok(()));
    assert_eq!(OPEN.check_host("localhost"), Ok(()));
    assert_eq!(OPEN.check_host("10.0.0.1"), Ok(()));
}

#[tokio::test]
async fn resolution_filters_blocked_addresses() {
    assert!(matches!(
        STRICT.resolve("localhost", 80).await,
        Err(Refusal::LocalName(_))
    ));
    let open = OPEN
        .resolve("localhost", 80)
        .await
        .expect("localhost resolves");
    assert!(open.iter().all(|a| a.ip().is_loopback()));
    assert!(STRICT.resolve("127.0.0.1", 80).await.is_err());
    assert!(OPEN.check_resolved("127.0.0.1").await.is_ok());
    assert!(STRICT.check_resolved("localhost").await.is_err());
}
