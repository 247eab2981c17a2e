//! The store keeps lists as rows, so a comma is an ordinary character in a
//! premium prefix; a `--host` with a comma is still refused, by `site add`
//! and `deploy` alike, because it is not a host name.

mod common;

use common::commons;

#[test]
fn a_premium_prefix_holding_a_comma_is_kept_whole() {
    let dir = tempfile::tempdir().unwrap();
    let project = commons().arg("--data").arg(dir.path()).args(["project", "add", "wiki"]).output().unwrap();
    assert!(project.status.success());
    let not_a_host = commons()
        .arg("--data")
        .arg(dir.path())
        .args(["site", "add", "wiki", "--upstream", "127.0.0.1:9", "--operator", "olga", "--project", "wiki"])
        .args(["--provider", "pat", "--host", "a,b"])
        .output()
        .unwrap();
    assert_eq!(not_a_host.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&not_a_host.stderr).contains("\"a,b\" is not a host name"));
    let added = commons()
        .arg("--data")
        .arg(dir.path())
        .args(["site", "add", "wiki", "--upstream", "127.0.0.1:9", "--operator", "olga", "--project", "wiki"])
        .args(["--provider", "pat", "--premium-prefix", "/export,csv", "--premium-prefix", "/pro"])
        .args(["--host", "wiki.example.org"])
        .output()
        .unwrap();
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
    let mut store = store::Store::open(&store::Location::new(Some(dir.path().to_owned()), None)).unwrap();
    let site = store.sites().unwrap().remove(0);
    assert_eq!(site.premium_prefixes, ["/export,csv", "/pro"]);
    assert_eq!(site.custom_hosts, ["wiki.example.org"]);
}

#[test]
fn a_deploy_host_holding_a_comma_is_refused_as_no_host_name() {
    let dir = tempfile::tempdir().unwrap();
    let app = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/apps/search");
    let refused = commons()
        .arg("--data")
        .arg(dir.path())
        .args(["deploy", "search", "--app", app, "--node", "pat-1", "--operator", "sam", "--host", "a,b.example"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("--host \"a,b.example\" is not a host name"), "{stderr}");
}
