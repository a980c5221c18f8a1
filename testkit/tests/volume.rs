//! The volume a test gives a member's data directory: mounted at its path, filled by
//! something else while the filler lives, and gone (unmounted, the filler stopped) when
//! dropped, also when the test panics. As root.

use testkit::volume::Tmpfs;

fn mounted(path: &std::path::Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let path = path.to_str().unwrap();
    mounts.lines().any(|l| l.split(' ').nth(1) == Some(path))
}

#[test]
fn a_tmpfs_fills_while_its_filler_lives_and_is_unmounted_when_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("etcd");
    let volume = Tmpfs::mount(&path, "8m").expect("mount (as root)");
    assert!(mounted(&path));
    assert!(volume.available() > 7 << 20, "{}", volume.available());
    let filler = volume.keep_full().expect("fill");
    assert!(volume.available() < 1 << 20, "{}", volume.available());
    drop(filler);
    assert!(volume.available() > 7 << 20, "the space is back");
    assert!(!path.join("filler").exists());
    drop(volume);
    assert!(!mounted(&path), "unmounted");

    // A test that panics while the volume is full leaves nothing mounted either.
    let again = path.clone();
    let result = std::panic::catch_unwind(move || {
        let volume = Tmpfs::mount(&again, "8m").expect("mount");
        let _filler = volume.keep_full().expect("fill");
        panic!("the scenario failed");
    });
    assert!(result.is_err());
    assert!(!mounted(&path), "unmounted after a panic");
}
