//! Backups against a real etcd and the official etcdutl: a snapshot streamed under writes is
//! stored, fetched back and proven restorable; a stored backup with one byte flipped fails
//! the proof and is refused by a restore, which writes nothing. Takes the machine-wide
//! cluster lock.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use etcd_client::{Client, GetOptions};
use etcd_operator::{
    backup::{BackupOwner, snapshot_object},
    etcd_bin::EtcdBinaries,
    proto,
};
use etcd_sidecar::backup::{
    BackupError, Credentials, Etcdutl, MetaCache, Source, Storage, restore, take, verify,
};
use testkit::{free_port, serial_guard, wait_for};

struct Etcd {
    child: Child,
    url: String,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_etcd(dir: &Path) -> Etcd {
    let bins = EtcdBinaries::from_env();
    let bin = bins
        .resolve(etcd_operator::version::DEFAULT_VERSION)
        .unwrap();
    let url = format!("http://127.0.0.1:{}", free_port());
    let peer = format!("http://127.0.0.1:{}", free_port());
    let child = Command::new(bin)
        .args([
            "--name=b".to_string(),
            format!("--data-dir={}", dir.join("etcd").display()),
            format!("--listen-client-urls={url}"),
            format!("--advertise-client-urls={url}"),
            format!("--listen-peer-urls={peer}"),
            format!("--initial-advertise-peer-urls={peer}"),
            format!("--initial-cluster=b={peer}"),
            "--log-level=error".into(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Etcd { child, url }
}

fn etcdutl() -> Etcdutl {
    let bins = EtcdBinaries::from_env();
    let etcd = bins
        .resolve(etcd_operator::version::DEFAULT_VERSION)
        .unwrap();
    Etcdutl::new(
        bins.etcdutl(&etcd)
            .expect("an official etcdutl (scripts/setup.sh installs it)"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_is_proven_restorable_and_a_corrupt_one_is_refused() {
    let _serial = serial_guard();
    let dir = tempfile::tempdir().unwrap();
    let etcd = start_etcd(dir.path());
    let url = etcd.url.clone();
    let mut client = wait_for("etcd to answer", Duration::from_secs(30), || {
        let url = url.clone();
        async move {
            let mut c = Client::connect([url], None).await.ok()?;
            c.status().await.ok()?;
            Some(c)
        }
    })
    .await
    .unwrap();
    for i in 0..200 {
        client
            .put(format!("k/{i:04}"), vec![b'x'; 512], None)
            .await
            .unwrap();
    }
    let storage_spec = proto::BackupStorage {
        local_path: dir.path().join("backups").display().to_string(),
        ..Default::default()
    };
    let storage = Storage::open(&storage_spec, &Credentials::none()).unwrap();
    let tool = etcdutl();
    let owner = BackupOwner::new("", "c", "0123abcd");
    let meta = take(
        Source {
            owner: &owner,
            requested_at_unix_ms: 1_764_583_200_000,
            member: "c-0000",
            client: client.clone(),
            scratch: &dir.path().join("scratch"),
        },
        &storage,
        &tool,
    )
    .await
    .unwrap();
    assert!(meta.verified, "{meta:?}");
    assert!(meta.revision >= 201, "{meta:?}");
    assert!(meta.total_keys >= 200, "{meta:?}");
    assert_eq!(meta.sha256.len(), 64);
    assert_eq!(
        meta.name,
        "c-20251201T100000.000Z-r201-u0123abcd".replace("r201", &format!("r{}", meta.revision))
    );
    assert_eq!(
        (meta.namespace.as_str(), meta.uid.as_str()),
        ("local", "0123abcd")
    );
    let cache = MetaCache::default();
    let listed = storage.list("", "c", &cache).await.unwrap();
    assert_eq!(listed, vec![meta.clone()], "listed once, with its metadata");
    assert_eq!(cache.len(), 1);
    assert_eq!(storage.list("", "c", &cache).await.unwrap(), listed);
    // Another namespace's cluster of the same name sees none of it.
    assert!(
        storage
            .list("team-b", "c", &cache)
            .await
            .unwrap()
            .is_empty()
    );

    // A good backup restores into an empty data dir: every key is there.
    let restored_dir = dir.path().join("restored");
    let got = restore(
        &storage,
        &tool,
        ("", "c"),
        &meta.name,
        &meta.sha256,
        1_000_000_000,
        &dir.path().join("restore-scratch"),
        &restored_dir.join("etcd"),
        "r",
        "http://127.0.0.1:2380",
    )
    .await
    .unwrap();
    assert_eq!(got.revision, meta.revision);
    let restored_db = restored_dir
        .join("etcd")
        .join("member")
        .join("snap")
        .join("db");
    let status = tool.status(&restored_db).await.unwrap();
    assert!(status.revision >= meta.revision + got.bumped_by);

    // One byte flipped in the stored snapshot.
    let object = dir
        .path()
        .join("backups")
        .join("local")
        .join("c")
        .join(snapshot_object(&meta.name));
    let mut bytes = std::fs::read(&object).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&object, &bytes).unwrap();
    let proof = verify(&storage, &tool, &meta, &dir.path().join("scratch2")).await;
    assert!(
        matches!(proof, Err(BackupError::Integrity(_))),
        "the proof fails: {proof:?}"
    );
    let target = dir.path().join("never");
    let refused = restore(
        &storage,
        &tool,
        ("", "c"),
        &meta.name,
        &meta.sha256,
        0,
        &dir.path().join("restore-scratch2"),
        &target.join("etcd"),
        "r",
        "http://127.0.0.1:2380",
    )
    .await;
    assert!(
        matches!(refused, Err(BackupError::Integrity(_))),
        "{refused:?}"
    );
    assert!(!target.exists(), "nothing was written for a corrupt backup");

    // The live cluster is untouched by all this.
    let all = client
        .get(
            "k/",
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .unwrap();
    assert_eq!(all.count(), 200);

    // A backup that is not there, and storage that names nothing.
    assert!(matches!(
        storage.meta("", "c", "missing").await,
        Err(BackupError::NotFound(_))
    ));
    assert!(Storage::open(&proto::BackupStorage::default(), &Credentials::none()).is_err());
    // A name that is not a Kubernetes name never becomes a path.
    for (ns, cluster) in [("", ".."), ("..", "c"), ("", "../c"), ("", "/etc")] {
        assert!(
            matches!(
                storage.list(ns, cluster, &cache).await,
                Err(BackupError::Config(_))
            ),
            "{ns:?}/{cluster:?}"
        );
    }
}

/// S3 and Azure storages are opened only with the credentials given: none given, none
/// used (no environment, no instance metadata), and the error says what is missing.
#[test]
fn object_storages_need_their_credentials_given() {
    let s3 = proto::BackupStorage {
        s3_bucket: "b".into(),
        s3_endpoint: "http://127.0.0.1:9".into(),
        ..Default::default()
    };
    let refused = Storage::open(&s3, &Credentials::none()).unwrap_err();
    assert!(
        refused.to_string().contains("AWS_ACCESS_KEY_ID"),
        "{refused}"
    );
    let keys = Credentials::from_lookup("a test", |k| match k {
        "AWS_ACCESS_KEY_ID" => Some("id".into()),
        "AWS_SECRET_ACCESS_KEY" => Some("secret".into()),
        _ => None,
    });
    assert!(Storage::open(&s3, &keys).is_ok());
    let azure = proto::BackupStorage {
        azure_container: "c".into(),
        azure_account: "acct".into(),
        ..Default::default()
    };
    let refused = Storage::open(&azure, &Credentials::none()).unwrap_err();
    assert!(
        refused.to_string().contains("AZURE_STORAGE_ACCOUNT_KEY"),
        "{refused}"
    );
    let emulator = proto::BackupStorage {
        azure_container: "c".into(),
        azure_use_emulator: true,
        azure_endpoint: "http://127.0.0.1:9".into(),
        ..Default::default()
    };
    assert!(Storage::open(&emulator, &Credentials::none()).is_ok());
}
