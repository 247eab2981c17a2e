//! Bundles: the same files give the same id, and a damaged or hostile
//! bundle is refused before anything lands outside its directory.

use agent::bundle::{BundleError, pack, unpack};

#[test]
fn the_same_files_give_the_same_bundle_and_it_unpacks_to_them() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for dir in [a.path(), b.path()] {
        std::fs::create_dir_all(dir.join("static")).unwrap();
        std::fs::write(dir.join("commons.toml"), "name = \"x\"\n").unwrap();
        std::fs::write(dir.join("static/app.js"), "alert(1)").unwrap();
    }
    let (one, two) = (pack(a.path()).unwrap(), pack(b.path()).unwrap());
    assert_eq!(one.id, two.id, "content-addressed: made elsewhere, same id");
    let out = tempfile::tempdir().unwrap();
    unpack(&one.bytes, &one.id, out.path()).unwrap();
    assert_eq!(std::fs::read_to_string(out.path().join("static/app.js")).unwrap(), "alert(1)");
}

#[test]
fn a_bundle_that_is_not_the_one_named_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("commons.toml"), "x").unwrap();
    let mut bundle = pack(dir.path()).unwrap();
    let last = bundle.bytes.len() - 1;
    bundle.bytes[last] ^= 1;
    let out = tempfile::tempdir().unwrap();
    assert!(matches!(unpack(&bundle.bytes, &bundle.id, out.path()), Err(BundleError::Mismatch { .. })));
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0, "nothing unpacked");
}

#[test]
fn an_entry_that_climbs_out_of_its_directory_is_refused() {
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default()));
    let mut header = tar::Header::new_gnu();
    let data = b"owned";
    header.set_size(data.len() as u64);
    header.set_entry_type(tar::EntryType::Regular);
    // set_path refuses "..", as it should; write the name into the header.
    header.as_gnu_mut().unwrap().name[..9].copy_from_slice(b"../escape");
    header.set_cksum();
    tar.append(&header, &data[..]).unwrap();
    let bytes = tar.into_inner().unwrap().finish().unwrap();
    let root = tempfile::tempdir().unwrap();
    let into = root.path().join("app");
    let refused = unpack(&bytes, &agent::bundle::id_of(&bytes), &into);
    assert!(matches!(refused, Err(BundleError::Escapes(_))), "{refused:?}");
    assert!(!root.path().join("escape").exists());
}

#[test]
fn a_symbolic_link_to_a_secret_outside_the_app_is_refused_naming_it_and_never_followed() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("node.key"), "the node's secret").unwrap();
    let app = root.path().join("app");
    std::fs::create_dir_all(app.join("static")).unwrap();
    std::fs::write(app.join("commons.toml"), "name = \"x\"\n").unwrap();
    let link = app.join("static/key.txt");
    std::os::unix::fs::symlink(root.path().join("node.key"), &link).unwrap();
    for refused in [pack(&app).map(drop), agent::bundle::check(&app)] {
        match refused {
            Err(BundleError::Symlink(path)) => assert_eq!(path, link),
            other => panic!("a symbolic link was not refused as one: {other:?}"),
        }
    }
    let message = agent::bundle::check(&app).unwrap_err().to_string();
    assert!(message.contains("static/key.txt") && message.contains("symbolic link"), "{message}");
    // The copy onto a node of this machine refuses it too.
    let copied = runtime::copy_dir(&app, &root.path().join("copy"));
    assert!(copied.unwrap_err().to_string().contains("key.txt"));
    assert!(!root.path().join("copy/static/key.txt").exists(), "the secret was not copied");
}

#[test]
fn a_bundle_entry_that_is_a_link_is_refused_and_nothing_lands() {
    for kind in [tar::EntryType::Symlink, tar::EntryType::Link] {
        let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default()));
        let mut header = tar::Header::new_gnu();
        header.set_size(0);
        header.set_entry_type(kind);
        header.set_link_name("/etc/passwd").unwrap();
        tar.append_data(&mut header, "passwd", &[][..]).unwrap();
        let bytes = tar.into_inner().unwrap().finish().unwrap();
        let out = tempfile::tempdir().unwrap();
        let refused = unpack(&bytes, &agent::bundle::id_of(&bytes), out.path());
        assert!(matches!(&refused, Err(BundleError::NotRegular(name, _)) if name == "passwd"), "{refused:?}");
        assert!(std::fs::symlink_metadata(out.path().join("passwd")).is_err(), "no link was made");
    }
}

/// Whether a file may be run travels with it (an app's start script), and
/// nothing more: no setuid bit, no other modes.
#[test]
fn an_executable_stays_executable_and_gains_nothing_else() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("app");
    std::fs::create_dir_all(&app).unwrap();
    for (name, mode) in [("start.sh", 0o4750), ("data.txt", 0o600)] {
        std::fs::write(app.join(name), name).unwrap();
        std::fs::set_permissions(app.join(name), std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let bundle = agent::bundle::pack(&app).unwrap();
    let into = dir.path().join("unpacked");
    agent::bundle::unpack(&bundle.bytes, &bundle.id, &into).unwrap();
    let mode = |name: &str| std::fs::metadata(into.join(name)).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode("start.sh"), 0o755);
    assert_eq!(mode("data.txt") & 0o111, 0, "never made executable");
}
