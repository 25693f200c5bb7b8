//! Every way a file can be damaged or misused is named by its own error, and a failed
//! decrypt never writes plaintext of a segment that did not authenticate.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Cursor;

use keyshift_envelope::{
    Decryptor, Encryptor, EnvelopeError, Header, KekError, Keyring, LocalKek, MasterKey,
    MasterKeyCache, Mode,
};

const KID: &str = "https://vault.example/keys/kek/00000000000000000000000000000001";
const OTHER_KID: &str = "https://vault.example/keys/kek2/00000000000000000000000000000002";
const SEG: u32 = 4096;
const FULL: usize = SEG as usize + 16;
const CONTEXT: &[u8] = b"tenant=acme;object=a.bin";

struct Setup {
    kek: LocalKek,
    keyring: Keyring,
    master: MasterKey,
}

async fn setup() -> Setup {
    let mut kek = LocalKek::new();
    kek.generate(KID).unwrap();
    kek.generate(OTHER_KID).unwrap();
    let (keyring, master) = Keyring::create(&kek, KID, 1_767_225_600).await.unwrap();
    Setup {
        kek,
        keyring,
        master,
    }
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

impl Setup {
    async fn encrypt(&self, mode: Mode, plaintext: &[u8]) -> Vec<u8> {
        let encryptor = match mode {
            Mode::ThreeLevel => Encryptor::three_level(&self.master, CONTEXT, SEG).unwrap(),
            Mode::TwoLevel => Encryptor::two_level(&self.kek, KID, CONTEXT, SEG)
                .await
                .unwrap(),
        };
        encryptor.encrypt_to_vec(plaintext).unwrap()
    }

    /// Parses, unlocks and stream-decrypts `file`; returns the error and what was written.
    async fn decrypt(&self, file: &[u8]) -> (Result<Vec<u8>, EnvelopeError>, Vec<u8>) {
        self.decrypt_with(file, CONTEXT).await
    }

    async fn decrypt_with(
        &self,
        file: &[u8],
        context: &[u8],
    ) -> (Result<Vec<u8>, EnvelopeError>, Vec<u8>) {
        let mut reader = file;
        let header = match Header::read_from(&mut reader) {
            Ok(h) => h,
            Err(e) => return (Err(e), Vec::new()),
        };
        let decryptor =
            match Decryptor::unlock(&header, &self.kek, Some(&self.keyring), context).await {
                Ok(d) => d,
                Err(e) => return (Err(e), Vec::new()),
            };
        let mut out = Vec::new();
        match decryptor.decrypt_stream(reader, &mut out) {
            Ok(n) => {
                assert_eq!(n, out.len() as u64);
                (Ok(out.clone()), out)
            }
            Err(e) => {
                assert_eq!(e.plaintext_written, out.len() as u64);
                assert_eq!(e.wrote_partial_output(), !out.is_empty());
                (Err(e.error), out)
            }
        }
    }

    async fn decryptor(&self, file: &[u8]) -> Decryptor {
        let header = Header::parse(file).unwrap();
        Decryptor::unlock(&header, &self.kek, Some(&self.keyring), CONTEXT)
            .await
            .unwrap()
    }
}

const MODES: [Mode; 2] = [Mode::ThreeLevel, Mode::TwoLevel];

#[tokio::test]
async fn round_trip_every_size_both_modes() {
    let s = setup().await;
    for mode in MODES {
        for len in [0usize, 1, 4095, 4096, 4097, 8192, 3 * 4096 + 5] {
            let plaintext = pattern(len);
            let file = s.encrypt(mode, &plaintext).await;
            let segments = len.div_ceil(SEG as usize).max(1);
            let header = Header::parse(&file).unwrap();
            assert_eq!(header.mode(), mode);
            assert_eq!(file.len(), header.len() + len + 16 * segments, "{len}");
            let (result, _) = s.decrypt(&file).await;
            assert_eq!(result.unwrap(), plaintext, "{mode:?} {len}");
            let d = s.decryptor(&file).await;
            assert_eq!(d.decrypt_slice(&file).unwrap(), plaintext);
            for (offset, n) in [
                (0u64, 1u64),
                (0, u64::MAX),
                (4095, 2),
                (4096, 4096),
                (5, 9000),
                (len as u64, 3),
            ] {
                let got = d.decrypt_range(Cursor::new(&file), offset, n).unwrap();
                let start = (offset as usize).min(len);
                let end = (offset.saturating_add(n) as usize).min(len);
                assert_eq!(got, &plaintext[start..end], "{mode:?} {len} {offset}+{n}");
            }
        }
    }
}

#[tokio::test]
async fn zero_length_is_one_empty_last_segment() {
    let s = setup().await;
    for mode in MODES {
        let file = s.encrypt(mode, b"").await;
        let header = Header::parse(&file).unwrap();
        assert_eq!(file.len(), header.len() + 16);
        assert_eq!(s.decrypt(&file).await.0.unwrap(), b"");
        let d = s.decryptor(&file).await;
        assert!(d
            .decrypt_range(Cursor::new(&file), 0, 10)
            .unwrap()
            .is_empty());
        // Without its one segment the file is truncated.
        let (err, _) = s.decrypt(&file[..header.len()]).await;
        assert!(matches!(err, Err(EnvelopeError::Truncated(_))), "{err:?}");
        let err = d.decrypt_range(Cursor::new(&file[..header.len()]), 0, 1);
        assert!(matches!(err, Err(EnvelopeError::Truncated(_))), "{err:?}");
    }
}

#[tokio::test]
async fn header_byte_flips_at_every_offset_fail_before_any_output() {
    let s = setup().await;
    for mode in MODES {
        let file = s.encrypt(mode, &pattern(5000)).await;
        let header_len = Header::parse(&file).unwrap().len();
        for at in 0..header_len {
            for mask in [0x01u8, 0x80] {
                let mut bad = file.clone();
                bad[at] ^= mask;
                let (err, out) = s.decrypt(&bad).await;
                assert!(out.is_empty(), "{mode:?} byte {at}: output written");
                let err = err.expect_err("a header edit must fail");
                assert!(
                    matches!(
                        err,
                        EnvelopeError::NotAnEnvelope
                            | EnvelopeError::UnsupportedVersion(_)
                            | EnvelopeError::MalformedHeader(_)
                            | EnvelopeError::HeaderTampered
                            | EnvelopeError::WrongKeyring { .. }
                            | EnvelopeError::Truncated(_)
                            | EnvelopeError::Kek(_)
                    ),
                    "{mode:?} byte {at} ^ {mask:#x}: {err}"
                );
                // The fixed fields are authenticated by the header MAC.
                if (14..85).contains(&at) {
                    assert!(
                        matches!(err, EnvelopeError::HeaderTampered),
                        "{mode:?} byte {at}: {err}"
                    );
                }
            }
        }
    }
}

#[tokio::test]
async fn reordered_segments_are_named_by_index() {
    let s = setup().await;
    for mode in MODES {
        let plaintext = pattern(3 * 4096 + 100);
        let file = s.encrypt(mode, &plaintext).await;
        let h = Header::parse(&file).unwrap().len();
        let mut swapped = file.clone();
        swapped[h..h + FULL].copy_from_slice(&file[h + FULL..h + 2 * FULL]);
        swapped[h + FULL..h + 2 * FULL].copy_from_slice(&file[h..h + FULL]);
        let (err, out) = s.decrypt(&swapped).await;
        assert!(
            matches!(
                err,
                Err(EnvelopeError::SegmentTampered {
                    index: 0,
                    is_final: false
                })
            ),
            "{err:?}"
        );
        assert!(out.is_empty());
        // Swapping 1 and 2 writes segment 0 (authentic) and stops at 1.
        let mut swapped = file.clone();
        swapped[h + FULL..h + 2 * FULL].copy_from_slice(&file[h + 2 * FULL..h + 3 * FULL]);
        swapped[h + 2 * FULL..h + 3 * FULL].copy_from_slice(&file[h + FULL..h + 2 * FULL]);
        let (err, out) = s.decrypt(&swapped).await;
        assert!(
            matches!(err, Err(EnvelopeError::SegmentTampered { index: 1, .. })),
            "{err:?}"
        );
        assert_eq!(out, &plaintext[..4096]);
    }
}

#[tokio::test]
async fn segment_from_another_file_under_the_same_key_is_refused() {
    let s = setup().await;
    for mode in MODES {
        let plaintext = pattern(3 * 4096);
        let a = s.encrypt(mode, &plaintext).await;
        let b = s.encrypt(mode, &plaintext).await;
        let h = Header::parse(&a).unwrap().len();
        assert_eq!(h, Header::parse(&b).unwrap().len());
        for index in 0..3 {
            let mut spliced = a.clone();
            let range = h + index * FULL..h + (index + 1) * FULL;
            spliced[range.clone()].copy_from_slice(&b[range]);
            let (err, out) = s.decrypt(&spliced).await;
            assert!(
                matches!(err, Err(EnvelopeError::SegmentTampered { index: i, .. }) if i == index as u64),
                "{mode:?} {index}: {err:?}"
            );
            assert_eq!(out, &plaintext[..index * 4096]);
        }
        // B's header on A's segments: the header authenticates, the segments do not.
        let mut mixed = b[..h].to_vec();
        mixed.extend_from_slice(&a[h..]);
        let (err, out) = s.decrypt(&mixed).await;
        assert!(
            matches!(err, Err(EnvelopeError::SegmentTampered { index: 0, .. })),
            "{err:?}"
        );
        assert!(out.is_empty());
    }
}

#[tokio::test]
async fn truncation_at_every_boundary_and_inside_segments() {
    let s = setup().await;
    for mode in MODES {
        for plaintext in [pattern(3 * 4096 + 100), pattern(3 * 4096)] {
            let file = s.encrypt(mode, &plaintext).await;
            let h = Header::parse(&file).unwrap().len();
            let d = s.decryptor(&file).await;
            let segments = (file.len() - h).div_ceil(FULL);
            // At each boundary: the last segment is missing.
            for k in 0..segments {
                let cut = &file[..h + k * FULL];
                let (err, out) = s.decrypt(cut).await;
                assert!(
                    matches!(err, Err(EnvelopeError::Truncated(_))),
                    "{mode:?} boundary {k}: {err:?}"
                );
                // The segments before the one that turned out not to be last were written;
                // that one was not.
                assert_eq!(out, &plaintext[..k.saturating_sub(1) * 4096], "{k}");
                let err = d.decrypt_range(Cursor::new(cut), 0, 10);
                assert!(
                    matches!(err, Err(EnvelopeError::Truncated(_))),
                    "range, boundary {k}: {err:?}"
                );
            }
            // Inside segments (tag included): truncated or the final segment fails.
            for cut_at in [
                h + 1,
                h + 15,
                h + 16,
                h + 100,
                h + FULL - 1,
                h + FULL + 7,
                file.len() - 1,
                file.len() - 17,
            ] {
                let cut = &file[..cut_at];
                let (err, out) = s.decrypt(cut).await;
                assert!(
                    matches!(
                        err,
                        Err(EnvelopeError::Truncated(_))
                            | Err(EnvelopeError::SegmentTampered { is_final: true, .. })
                    ),
                    "{mode:?} cut at {cut_at}: {err:?}"
                );
                assert!(plaintext.starts_with(&out));
                assert_eq!(out.len() % 4096, 0);
                assert!(d.decrypt_range(Cursor::new(cut), 0, 10).is_err());
            }
        }
    }
}

#[tokio::test]
async fn appended_bytes_are_refused() {
    let s = setup().await;
    for mode in MODES {
        // A full last segment: the appended data is named as such.
        let plaintext = pattern(2 * 4096);
        let file = s.encrypt(mode, &plaintext).await;
        for extra in [1usize, 15, 16, 17, FULL, FULL + 1, 3 * FULL] {
            let mut longer = file.clone();
            longer.extend(std::iter::repeat_n(0xA5, extra));
            let (err, out) = s.decrypt(&longer).await;
            assert!(
                matches!(err, Err(EnvelopeError::TrailingData { last_segment: 1 })),
                "{mode:?} +{extra}: {err:?}"
            );
            assert_eq!(out, &plaintext[..4096]);
        }
        // A short last segment: the reader cannot know where its tag ends, so the final
        // segment fails.
        let plaintext = pattern(4096 + 10);
        let file = s.encrypt(mode, &plaintext).await;
        let d = s.decryptor(&file).await;
        for extra in [1usize, 16, 100] {
            let mut longer = file.clone();
            longer.extend(std::iter::repeat_n(0x00, extra));
            let (err, out) = s.decrypt(&longer).await;
            assert!(
                matches!(
                    err,
                    Err(EnvelopeError::SegmentTampered {
                        index: 1,
                        is_final: true
                    })
                ),
                "{mode:?} +{extra}: {err:?}"
            );
            assert_eq!(out, &plaintext[..4096]);
            assert!(d.decrypt_range(Cursor::new(&longer), 0, 1).is_err());
        }
        // An empty file with anything after its one segment.
        let file = s.encrypt(mode, b"").await;
        let mut longer = file.clone();
        longer.push(0);
        assert!(s.decrypt(&longer).await.0.is_err());
    }
}

#[tokio::test]
async fn tag_and_ciphertext_flips_name_the_segment() {
    let s = setup().await;
    for mode in MODES {
        let plaintext = pattern(2 * 4096 + 1);
        let file = s.encrypt(mode, &plaintext).await;
        let h = Header::parse(&file).unwrap().len();
        let d = s.decryptor(&file).await;
        for (at, index, is_final) in [
            (h, 0u64, false),
            (h + FULL - 1, 0, false),
            (h + FULL + 5, 1, false),
            (file.len() - 1, 2, true),
        ] {
            let mut bad = file.clone();
            bad[at] ^= 0x40;
            let (err, out) = s.decrypt(&bad).await;
            match err {
                Err(EnvelopeError::SegmentTampered {
                    index: i,
                    is_final: f,
                }) => {
                    assert_eq!((i, f), (index, is_final), "byte {at}");
                }
                other => panic!("byte {at}: {other:?}"),
            }
            assert_eq!(out, &plaintext[..index as usize * 4096]);
            // Random access names the same segment when it reads it.
            let range = d.decrypt_range(Cursor::new(&bad), index * 4096, 1);
            assert!(
                matches!(range, Err(EnvelopeError::SegmentTampered { index: i, .. }) if i == index),
                "{range:?}"
            );
        }
    }
}

#[tokio::test]
async fn wrong_context_kek_and_keyring_are_named() {
    let s = setup().await;
    for mode in MODES {
        let file = s.encrypt(mode, b"payload").await;
        let (err, _) = s.decrypt_with(&file, b"tenant=other").await;
        assert!(matches!(err, Err(EnvelopeError::WrongContext)), "{err:?}");
        let (err, _) = s.decrypt_with(&file, b"").await;
        assert!(matches!(err, Err(EnvelopeError::WrongContext)), "{err:?}");
    }

    // 2-level, wrong KEK: the header's kid now names another key.
    let file = s.encrypt(Mode::TwoLevel, b"payload").await;
    let header = Header::parse(&file).unwrap();
    let mut wrapped = header.wrapped_key().unwrap().clone();
    wrapped.kid = OTHER_KID.into();
    let moved = header.with_wrapped_key(&wrapped).unwrap();
    let err = Decryptor::from_kek(&moved, &s.kek, CONTEXT).await;
    assert!(
        matches!(err, Err(EnvelopeError::Kek(KekError::UnwrapFailed(_)))),
        "{err:?}"
    );
    let empty = LocalKek::new();
    let err = Decryptor::from_kek(&header, &empty, CONTEXT).await;
    assert!(
        matches!(err, Err(EnvelopeError::Kek(KekError::NotFound(_)))),
        "{err:?}"
    );

    // 3-level, wrong KEK: a keyring record whose kid names another key.
    let file = s.encrypt(Mode::ThreeLevel, b"payload").await;
    let header = Header::parse(&file).unwrap();
    let mut record: serde_json::Value = serde_json::from_str(&s.keyring.to_json()).unwrap();
    record["kek_kid"] = OTHER_KID.into();
    let swapped = Keyring::from_json(&record.to_string()).unwrap();
    let err = Decryptor::unlock(&header, &s.kek, Some(&swapped), CONTEXT).await;
    assert!(
        matches!(err, Err(EnvelopeError::Kek(KekError::UnwrapFailed(_)))),
        "{err:?}"
    );

    // Wrong keyring, and none.
    let (other, other_master) = Keyring::create(&s.kek, KID, 0).await.unwrap();
    let err = Decryptor::unlock(&header, &s.kek, Some(&other), CONTEXT).await;
    match err {
        Err(EnvelopeError::WrongKeyring { file, keyring }) => {
            assert_eq!(file, s.keyring.master_key_id_hex());
            assert_eq!(keyring, other.master_key_id_hex());
        }
        other => panic!("{other:?}"),
    }
    let err = Decryptor::from_master_key(&header, &other_master, CONTEXT);
    assert!(
        matches!(err, Err(EnvelopeError::WrongKeyring { .. })),
        "{err:?}"
    );
    let err = Decryptor::unlock(&header, &s.kek, None, CONTEXT).await;
    assert!(
        matches!(err, Err(EnvelopeError::KeyringRequired(_))),
        "{err:?}"
    );
    // A master key whose id was forged to match opens nothing.
    let forged = MasterKey::from_parts(*s.master.id(), &[0u8; 32]).unwrap();
    let err = Decryptor::from_master_key(&header, &forged, CONTEXT);
    assert!(matches!(err, Err(EnvelopeError::HeaderTampered)), "{err:?}");
}

#[tokio::test]
async fn unknown_version_and_segment_size_fields() {
    let s = setup().await;
    let file = s.encrypt(Mode::ThreeLevel, b"payload").await;
    for version in [0u8, 2, 0xff] {
        let mut bad = file.clone();
        bad[8] = version;
        let (err, _) = s.decrypt(&bad).await;
        assert!(
            matches!(err, Err(EnvelopeError::UnsupportedVersion(v)) if v == version),
            "{err:?}"
        );
    }
    for size in [0u32, 1, 4095, 4 * 1024 * 1024 + 1, 0x8000_0000, u32::MAX] {
        let mut bad = file.clone();
        bad[10..14].copy_from_slice(&size.to_be_bytes());
        let (err, _) = s.decrypt(&bad).await;
        match err {
            Err(EnvelopeError::MalformedHeader(msg)) => {
                assert!(msg.contains("segment size"), "{msg}")
            }
            other => panic!("{size}: {other:?}"),
        }
    }
    // An allowed but different segment size fails the header MAC.
    let mut bad = file.clone();
    bad[10..14].copy_from_slice(&8192u32.to_be_bytes());
    assert!(matches!(
        s.decrypt(&bad).await.0,
        Err(EnvelopeError::HeaderTampered)
    ));
    // Segment sizes are checked when encrypting too.
    for size in [0u32, 4095, 4 * 1024 * 1024 + 1] {
        assert!(matches!(
            Encryptor::three_level(&s.master, CONTEXT, size),
            Err(EnvelopeError::InvalidInput(_))
        ));
    }
    // Not an envelope at all.
    let (err, _) = s.decrypt(b"%PDF-1.7 not ours").await;
    assert!(matches!(err, Err(EnvelopeError::NotAnEnvelope)), "{err:?}");
    let (err, _) = s.decrypt(b"").await;
    assert!(matches!(err, Err(EnvelopeError::Truncated(_))), "{err:?}");
}

#[tokio::test]
async fn a_failed_stream_says_what_it_wrote() {
    let s = setup().await;
    let plaintext = pattern(4 * 4096 + 7);
    let file = s.encrypt(Mode::ThreeLevel, &plaintext).await;
    let h = Header::parse(&file).unwrap().len();
    let mut bad = file.clone();
    bad[h + 2 * FULL + 3] ^= 1;
    let d = s.decryptor(&file).await;
    let mut out = Vec::new();
    let err = d.decrypt_stream(&bad[h..], &mut out).unwrap_err();
    assert_eq!(err.plaintext_written, 2 * 4096);
    assert!(err.wrote_partial_output());
    assert_eq!(out, &plaintext[..2 * 4096]);
    let text = err.to_string();
    assert!(
        text.contains("segment 2") && text.contains("discard the output"),
        "{text}"
    );
    // The in-memory API returns nothing on failure.
    assert!(matches!(
        d.decrypt_slice(&bad),
        Err(EnvelopeError::SegmentTampered { index: 2, .. })
    ));
    // A decryptor refuses a file with another header.
    let other = s.encrypt(Mode::ThreeLevel, &plaintext).await;
    assert!(matches!(
        d.decrypt_slice(&other),
        Err(EnvelopeError::InvalidInput(_))
    ));
    assert!(matches!(
        d.decrypt_range(Cursor::new(&other), 0, 1),
        Err(EnvelopeError::InvalidInput(_))
    ));
}

#[tokio::test]
async fn rewraps_keep_old_files_readable() {
    let s = setup().await;
    // 3-level: the keyring moves to a new KEK; files are untouched.
    let file = s.encrypt(Mode::ThreeLevel, b"kept").await;
    let rewrapped = s.keyring.rewrap(&s.kek, &s.kek, OTHER_KID).await.unwrap();
    let header = Header::parse(&file).unwrap();
    let d = Decryptor::unlock(&header, &s.kek, Some(&rewrapped), CONTEXT)
        .await
        .unwrap();
    assert_eq!(d.decrypt_slice(&file).unwrap(), b"kept");

    // 2-level: the data key moves to a new KEK; only the header's key slot changes.
    let file = s.encrypt(Mode::TwoLevel, &pattern(5000)).await;
    let header = Header::parse(&file).unwrap();
    let data_key = keyshift_envelope::Kek::unwrap(&s.kek, header.wrapped_key().unwrap())
        .await
        .unwrap();
    let new_wrapped = keyshift_envelope::Kek::wrap(&s.kek, OTHER_KID, &data_key)
        .await
        .unwrap();
    let new_header = header.with_wrapped_key(&new_wrapped).unwrap();
    let mut moved = new_header.as_bytes().to_vec();
    moved.extend_from_slice(&file[header.len()..]);
    let d = Decryptor::from_kek(&new_header, &s.kek, CONTEXT)
        .await
        .unwrap();
    assert_eq!(new_header.kek_kid(), Some(OTHER_KID));
    assert_eq!(d.decrypt_slice(&moved).unwrap(), pattern(5000));
}

#[tokio::test]
async fn cached_master_keys_decrypt() {
    let s = setup().await;
    let cache = MasterKeyCache::default();
    let master = cache.get_or_unwrap(&s.keyring, &s.kek).await.unwrap();
    let file = Encryptor::three_level(&master, CONTEXT, SEG)
        .unwrap()
        .encrypt_to_vec(b"x")
        .unwrap();
    let header = Header::parse(&file).unwrap();
    let again = cache.get_or_unwrap(&s.keyring, &s.kek).await.unwrap();
    let d = Decryptor::from_master_key(&header, &again, CONTEXT).unwrap();
    assert_eq!(d.decrypt_slice(&file).unwrap(), b"x");
}
