use super::*;

fn image(account: &str, id_byte: char) -> NewImage {
    let hash: String = std::iter::repeat_n(id_byte, 64).collect();
    NewImage {
        account: account.into(),
        id: hash[..16].to_string(),
        hash,
        format: SourceFormat::Jpeg,
        width: 640,
        height: 480,
        size: 1234,
        original_filename: "cat.jpg".into(),
        visibility: Visibility::Public,
        dominant_color: None,
        has_alpha: None,
        frames: None,
    }
}

/// SQLite, or PostgreSQL with `TEST_IMGNODE_STORE=postgres` (see `testing`).
async fn store(dir: &tempfile::TempDir) -> Store {
    let url = testing::store_url(dir.path(), "meta.db").await;
    Store::open(&url).await.unwrap()
}

#[tokio::test]
async fn accounts_are_unique() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir).await;
    s.create_account("demo", "free").await.unwrap();
    assert!(matches!(
        s.create_account("demo", "free").await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(s.account("demo").await.unwrap().unwrap().plan, "free");
    assert!(s.account("nobody").await.unwrap().is_none());
}

#[tokio::test]
async fn data_survives_close_and_reopen_and_migrations_run_once() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = store(&dir).await;
        s.create_account("demo", "free").await.unwrap();
        s.put_image(
            &image("demo", 'a'),
            "cats/cat.jpg",
            "cats/cat",
            Default::default(),
        )
        .await
        .unwrap();
        s.close().await;
    }
    let s = store(&dir).await;
    let found = s.image_by_stem("demo", "cats/cat").await.unwrap().unwrap();
    assert_eq!(found.id, "aaaaaaaaaaaaaaaa");
    assert_eq!((found.width, found.height, found.size), (640, 480, 1234));
    assert_eq!(found.format, SourceFormat::Jpeg);
}

#[tokio::test]
async fn same_bytes_at_a_second_path_are_not_new_and_same_path_conflicts() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir).await;
    s.create_account("demo", "free").await.unwrap();
    let first = s
        .put_image(&image("demo", 'a'), "a.jpg", "a", Default::default())
        .await
        .unwrap();
    assert!(first.is_new);
    let second = s
        .put_image(&image("demo", 'a'), "b.jpg", "b", Default::default())
        .await
        .unwrap();
    assert!(!second.is_new);
    assert!(matches!(
        s.put_image(&image("demo", 'a'), "a.jpg", "a", Default::default())
            .await,
        Err(StoreError::Conflict(_))
    ));
}

#[tokio::test]
async fn repointing_the_last_path_orphans_the_old_image() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir).await;
    s.create_account("demo", "free").await.unwrap();
    s.put_image(&image("demo", 'a'), "a.jpg", "a", Default::default())
        .await
        .unwrap();
    let overwrite = Placement {
        overwrite: true,
        ..Default::default()
    };
    let out = s
        .put_image(&image("demo", 'b'), "a.png", "a", overwrite)
        .await
        .unwrap();
    assert_eq!(
        out.orphaned,
        Some(("aaaaaaaaaaaaaaaa".to_string(), "a".repeat(64)))
    );
    assert_eq!(
        s.image_by_stem("demo", "a").await.unwrap().unwrap().id,
        "bbbbbbbbbbbbbbbb"
    );
    assert!(s.image("demo", "aaaaaaaaaaaaaaaa").await.unwrap().is_none());
    assert!(!s.plaintext_referenced(&"a".repeat(64)).await.unwrap());
}

/// `a.png` uploaded over `a.jpg` (one stem) without `overwrite` changes nothing.
#[tokio::test]
async fn a_stem_collision_is_a_conflict_and_deletes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir).await;
    s.create_account("demo", "free").await.unwrap();
    s.put_image(&image("demo", 'a'), "a.jpg", "a", Default::default())
        .await
        .unwrap();
    let refused = s
        .put_image(&image("demo", 'b'), "a.png", "a", Default::default())
        .await;
    assert!(
        matches!(refused, Err(StoreError::Conflict(_))),
        "{refused:?}"
    );
    assert_eq!(
        s.image_by_stem("demo", "a").await.unwrap().unwrap().id,
        "aaaaaaaaaaaaaaaa"
    );
    assert!(s.image("demo", "bbbbbbbbbbbbbbbb").await.unwrap().is_none());
}

/// Bytes held as private, uploaded again as explicitly public: refused, nothing changes.
#[tokio::test]
async fn an_explicit_visibility_that_differs_from_the_stored_image_is_a_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir).await;
    s.create_account("demo", "free").await.unwrap();
    let private = NewImage {
        visibility: Visibility::Private,
        ..image("demo", 'a')
    };
    s.put_image(&private, "a.jpg", "a", Default::default())
        .await
        .unwrap();
    let explicit = Placement {
        visibility_explicit: true,
        ..Default::default()
    };
    let refused = s
        .put_image(&image("demo", 'a'), "b.jpg", "b", explicit)
        .await;
    assert!(
        matches!(refused, Err(StoreError::Conflict(_))),
        "{refused:?}"
    );
    assert!(s.image_by_stem("demo", "b").await.unwrap().is_none());
    // Not asked explicitly: the new path joins the image, which stays private.
    s.put_image(&image("demo", 'a'), "b.jpg", "b", Default::default())
        .await
        .unwrap();
    let joined = s.image_by_stem("demo", "b").await.unwrap().unwrap();
    assert_eq!(joined.visibility, Visibility::Private);
}

#[tokio::test]
async fn accounts_do_not_see_each_others_paths() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir).await;
    s.create_account("one", "free").await.unwrap();
    s.create_account("two", "free").await.unwrap();
    s.put_image(&image("one", 'a'), "a.jpg", "a", Default::default())
        .await
        .unwrap();
    assert!(s.image_by_stem("two", "a").await.unwrap().is_none());
}

#[tokio::test]
async fn opening_creates_the_missing_folder() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fresh/clone/data/imgnode.db");
    Store::open(&format!("sqlite://{}", file.display()))
        .await
        .unwrap();
    assert!(file.is_file());
}

#[tokio::test]
async fn cache_keys_first_writer_wins_and_deletion_sticks() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir).await;
    let hash = "c".repeat(64);
    assert_eq!(s.cache_key(&hash).await.unwrap(), None);
    let first = s.cache_key_or_insert(&hash, &[1; 32]).await.unwrap();
    let second = s.cache_key_or_insert(&hash, &[2; 32]).await.unwrap();
    assert_eq!(first, [1; 32]);
    assert_eq!(second, [1; 32]);
    s.delete_cache_keys(std::slice::from_ref(&hash))
        .await
        .unwrap();
    assert_eq!(s.cache_key(&hash).await.unwrap(), None);
    s.close().await;
    if testing::postgres_selected() {
        // What follows is about SQLite's file.
        return;
    }
    // No trace of the key in the database file (secure_delete), after a checkpoint.
    let s = store(&dir).await;
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&s.pool)
        .await
        .unwrap();
    s.close().await;
    let needle = hex::encode([1u8; 32]);
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
            "deleted data key still readable on disk"
        );
    }
}
