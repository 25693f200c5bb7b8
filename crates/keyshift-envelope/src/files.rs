//! Encrypting, decrypting and re-encrypting regular files on several threads.
//!
//! A file whose length is known up front needs no look-ahead to find its last segment, and
//! its segments can be read at their own offsets (`pread`), so each thread reads and seals (or
//! opens) whole chunks of segments by itself. The calling thread writes the chunks out in
//! order. The bytes produced are exactly those of [`Encryptor::encrypt_stream`] and
//! [`Decryptor::decrypt_stream`], and so are the errors: a segment is judged last by its
//! position, the way the streaming decryptor judges it by the end of its input.
//!
//! Memory stays bounded whatever the file size: at most [`window`] chunks of
//! [`SEGMENTS_PER_CHUNK`] segments are in flight, plus one chunk of scratch per thread.
//!
//! The input must not change while it is read. A file that shrinks or grows meanwhile is an
//! error, never a silently short or long output.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::num::NonZeroUsize;
use std::os::unix::fs::FileExt;
use std::sync::{Condvar, Mutex};

use keyshift_crypto::gcm::TAG_LEN;
use zeroize::Zeroize;

use crate::error::{DecryptStreamError, EnvelopeError, Result};
use crate::stream::{nonce, segment_index, Decryptor, Encryptor, Misfit};

/// Segments a thread takes at a time: 1 MiB of plaintext at the default segment size, few
/// enough hand-offs that their cost does not show, small enough that memory stays low.
pub const SEGMENTS_PER_CHUNK: u64 = 16;

/// Chunks in flight (being worked on, or done and waiting for their turn to be written).
fn window(threads: usize) -> u64 {
    2 * threads as u64 + 2
}

/// The threads worth using on this machine: one per core.
pub fn default_threads() -> NonZeroUsize {
    std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN)
}

fn changed(what: &str) -> EnvelopeError {
    EnvelopeError::Io(io::Error::other(format!(
        "the input {what} while it was being read"
    )))
}

/// Whether anything lies at or after `end` in `file`.
fn has_bytes_at(file: &File, end: u64) -> io::Result<bool> {
    let mut probe = [0u8; 1];
    loop {
        match file.read_at(&mut probe, end) {
            Ok(n) => return Ok(n > 0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Shared state of one run: which chunk is next to take, which are done and waiting to be
/// written, the buffers free for reuse.
struct State {
    next: u64,
    written: u64,
    done: BTreeMap<u64, (Vec<u8>, Result<()>)>,
    free: Vec<Vec<u8>>,
    stop: bool,
}

/// Runs `work(chunk, output, scratch)` for every chunk in `0..count` on `threads` threads and
/// hands each chunk's output to `sink` in chunk order. A chunk whose work fails still has the
/// output it produced before the failure written, then the run stops with that error (a
/// decryptor writes the authentic segments that precede a bad one, like the stream does).
/// Every buffer is zeroized before it is freed: outputs may be plaintext.
fn ordered(
    threads: NonZeroUsize,
    count: u64,
    work: impl Fn(u64, &mut Vec<u8>, &mut Vec<u8>) -> Result<()> + Sync,
    mut sink: impl FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    let threads = threads
        .get()
        .min(usize::try_from(count).unwrap_or(usize::MAX))
        .max(1);
    let window = window(threads);
    let state = Mutex::new(State {
        next: 0,
        written: 0,
        done: BTreeMap::new(),
        free: Vec::new(),
        stop: false,
    });
    let turn = Condvar::new();
    let lock = || state.lock().unwrap_or_else(|e| e.into_inner());
    let result = std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                let mut scratch = Vec::new();
                loop {
                    let (chunk, mut out) = {
                        let mut s = lock();
                        while !s.stop && s.next < count && s.next >= s.written + window {
                            s = turn.wait(s).unwrap_or_else(|e| e.into_inner());
                        }
                        if s.stop || s.next >= count {
                            break;
                        }
                        s.next += 1;
                        (s.next - 1, s.free.pop().unwrap_or_default())
                    };
                    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        work(chunk, &mut out, &mut scratch)
                    }))
                    .unwrap_or_else(|_| {
                        Err(EnvelopeError::Io(io::Error::other(
                            "an encryption thread panicked",
                        )))
                    });
                    lock().done.insert(chunk, (out, outcome));
                    turn.notify_all();
                }
                scratch.zeroize();
            });
        }
        let result = (|| {
            while lock().written < count {
                let (out, outcome) = {
                    let mut s = lock();
                    loop {
                        let written = s.written;
                        if let Some(done) = s.done.remove(&written) {
                            break done;
                        }
                        s = turn.wait(s).unwrap_or_else(|e| e.into_inner());
                    }
                };
                let written = sink(&out);
                {
                    let mut s = lock();
                    s.written += 1;
                    s.free.push(out);
                }
                turn.notify_all();
                outcome?;
                written?;
            }
            Ok(())
        })();
        lock().stop = true;
        turn.notify_all();
        result
    });
    let mut s = lock();
    for buf in s.free.iter_mut() {
        buf.zeroize();
    }
    for (buf, _) in s.done.values_mut() {
        buf.zeroize();
    }
    result
}

/// Makes `buf` exactly `len` bytes long, without clearing what it already holds: every byte
/// is overwritten by the caller.
fn set_len(buf: &mut Vec<u8>, len: usize) {
    if buf.len() < len {
        buf.resize(len, 0);
    }
    buf.truncate(len);
}

fn read_exact_at(file: &File, buf: &mut [u8], offset: u64, what: &str) -> Result<()> {
    file.read_exact_at(buf, offset).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            changed(what)
        } else {
            EnvelopeError::Io(e)
        }
    })
}

/// The segments of chunk `chunk` out of `count`: first index and how many.
fn chunk_segments(chunk: u64, count: u64) -> (u64, u64) {
    let first = chunk * SEGMENTS_PER_CHUNK;
    (first, SEGMENTS_PER_CHUNK.min(count - first))
}

/// How a file body of `body` sealed bytes splits into segments: their count and the last one's
/// sealed length. `None` when there is no segment at all.
fn sealed_layout(body: u64, full: u64) -> Option<(u64, u64)> {
    if body == 0 {
        return None;
    }
    let count = body.div_ceil(full);
    Some((count, body - (count - 1) * full))
}

impl Encryptor {
    /// Encrypts `input`, a regular file, from its current position to its end into `writer`
    /// (header first) on `threads` threads, and returns the plaintext length. The output is byte for byte what
    /// [`encrypt_stream`](Self::encrypt_stream) writes for the same bytes; it is faster because
    /// the reading and sealing of a file of known length need not wait for each other.
    ///
    /// The file must not change meanwhile: if it shrinks or grows, the result is an error.
    pub fn encrypt_file<W: Write>(
        self,
        input: &File,
        mut writer: W,
        threads: NonZeroUsize,
    ) -> Result<u64> {
        let start = (&*input).stream_position()?;
        let end = input.metadata()?.len();
        let length = end.saturating_sub(start);
        let size = u64::from(self.header.segment_size());
        // An empty file is one empty last segment, as in the stream.
        let segments = length.div_ceil(size).max(1);
        segment_index(segments - 1)?;
        let prefix = *self.header.nonce_prefix();
        writer.write_all(self.header.as_bytes())?;
        let chunks = segments.div_ceil(SEGMENTS_PER_CHUNK);
        let work = |chunk: u64, out: &mut Vec<u8>, _: &mut Vec<u8>| -> Result<()> {
            let (first, n) = chunk_segments(chunk, segments);
            let plain = |s: u64| (length - s * size).min(size) as usize;
            let total: usize = (first..first + n).map(|s| plain(s) + TAG_LEN).sum();
            set_len(out, total);
            let mut at = 0;
            for s in first..first + n {
                let len = plain(s);
                let segment = &mut out[at..at + len];
                read_exact_at(input, segment, start + s * size, "shrank")?;
                let last = s == segments - 1;
                let tag = self.key.seal_in_place(
                    &nonce(&prefix, segment_index(s)?, last),
                    &self.digest,
                    segment,
                )?;
                out[at + len..at + len + TAG_LEN].copy_from_slice(&tag);
                at += len + TAG_LEN;
            }
            Ok(())
        };
        ordered(threads, chunks, work, |bytes| Ok(writer.write_all(bytes)?))?;
        if has_bytes_at(input, end)? {
            return Err(changed("grew"));
        }
        // Consumed, as a stream would be.
        (&*input).seek(SeekFrom::Start(end))?;
        writer.flush()?;
        Ok(length)
    }
}

impl Decryptor {
    /// Decrypts `input`, a regular file positioned just after this decryptor's header (where
    /// [`Header::read_from`](crate::Header::read_from) left it), into `writer` on `threads` threads, and returns the plaintext length. Output and errors are
    /// those of [`decrypt_stream`](Self::decrypt_stream): every segment is written only
    /// after it authenticated, in order; after a failure the error says how many bytes were
    /// written, and they must be discarded.
    pub fn decrypt_file<W: Write>(
        &self,
        input: &File,
        mut writer: W,
        threads: NonZeroUsize,
    ) -> std::result::Result<u64, DecryptStreamError> {
        let mut written = 0u64;
        let result = self.decrypt_file_into(input, &mut writer, threads, &mut written);
        result
            .map(|()| written)
            .map_err(|error| DecryptStreamError {
                error,
                plaintext_written: written,
            })
    }

    fn decrypt_file_into<W: Write>(
        &self,
        input: &File,
        writer: &mut W,
        threads: NonZeroUsize,
        written: &mut u64,
    ) -> Result<()> {
        let mut sink = |bytes: &[u8]| -> Result<()> {
            writer.write_all(bytes)?;
            *written += bytes.len() as u64;
            Ok(())
        };
        // Each segment opens straight into its place in the chunk's output.
        self.each_segment(input, threads, 0, &mut sink, |s, last, sealed, slot, _| {
            self.open_segment(s, last, sealed, slot)
        })?;
        writer.flush()?;
        Ok(())
    }

    /// Re-encrypts `input`, a regular file positioned just after this decryptor's header, under
    /// `encryptor` into `writer` (the new header first) on `threads` threads; returns the
    /// plaintext length. Every new segment is opened again under the new key and compared
    /// with the plaintext before it is written: what is written is known to decrypt to the
    /// same bytes. The plaintext exists only in each thread's scratch buffer, zeroized at the
    /// end.
    ///
    /// The new file keeps the old one's segmentation, so `encryptor` must use the same
    /// segment size.
    pub fn reencrypt_file<W: Write>(
        &self,
        input: &File,
        encryptor: &Encryptor,
        mut writer: W,
        threads: NonZeroUsize,
    ) -> Result<u64> {
        if encryptor.header.segment_size() != self.header.segment_size() {
            return Err(EnvelopeError::InvalidInput(
                "re-encryption keeps the segment size".into(),
            ));
        }
        let prefix = *encryptor.header.nonce_prefix();
        writer.write_all(encryptor.header.as_bytes())?;
        let mut sink = |bytes: &[u8]| -> Result<()> { Ok(writer.write_all(bytes)?) };
        let plaintext = self.each_segment(
            input,
            threads,
            TAG_LEN,
            &mut sink,
            |s, last, sealed, slot, spare| {
                let len = sealed.len() - TAG_LEN;
                let (plain, again) = spare[..2 * len].split_at_mut(len);
                self.open_segment(s, last, sealed, plain)?;
                let (segment, tag_space) = slot.split_at_mut(len);
                segment.copy_from_slice(plain);
                let nonce = nonce(&prefix, segment_index(s)?, last);
                let tag = encryptor
                    .key
                    .seal_in_place(&nonce, &encryptor.digest, segment)?;
                tag_space.copy_from_slice(&tag);
                // The check: the new segment opens under the new key, to the same bytes.
                let same = encryptor
                    .key
                    .open_to(&nonce, &encryptor.digest, segment, &tag, again)
                    .is_ok()
                    && keyshift_crypto::constant_time_eq(again, plain);
                if !same {
                    return Err(EnvelopeError::Io(io::Error::other(format!(
                        "segment {s} does not open again under the new key"
                    ))));
                }
                Ok(())
            },
        )?;
        writer.flush()?;
        Ok(plaintext)
    }

    /// Opens segment `s` into `dest`, naming the failure as the stream does.
    fn open_segment(&self, s: u64, last: bool, sealed: &[u8], dest: &mut [u8]) -> Result<()> {
        if self.open(s, last, sealed, dest).is_ok() {
            return Ok(());
        }
        Err(match self.misfit(s, last, sealed, dest) {
            Misfit::LastWithMore => EnvelopeError::TrailingData { last_segment: s },
            Misfit::NotLastAtEnd => EnvelopeError::Truncated(format!(
                "segment {s} is not the last one: the segments after it are missing"
            )),
            Misfit::Tampered => EnvelopeError::SegmentTampered {
                index: s,
                is_final: last,
            },
        })
    }

    /// Reads every sealed segment of `input` on `threads` threads and passes each to
    /// `each(index, last, sealed, slot, spare)`, where `slot` is the segment's place in its
    /// chunk's output (its plaintext length plus `extra` bytes) and `spare` is scratch of two
    /// segments. The chunk outputs go to `sink` in order. Returns the plaintext length.
    /// Errors are the stream's: a segment is last by its position in the file.
    fn each_segment(
        &self,
        input: &File,
        threads: NonZeroUsize,
        extra: usize,
        sink: &mut dyn FnMut(&[u8]) -> Result<()>,
        each: impl Fn(u64, bool, &[u8], &mut [u8], &mut [u8]) -> Result<()> + Sync,
    ) -> Result<u64> {
        let start = (&*input).stream_position()?;
        let size = self.header.segment_size() as usize;
        let full = (size + TAG_LEN) as u64;
        let length = input.metadata()?.len();
        let body = length.saturating_sub(start);
        let Some((segments, last_len)) = sealed_layout(body, full) else {
            return Err(EnvelopeError::Truncated(
                "no segment follows the header".into(),
            ));
        };
        segment_index(segments - 1)?;
        let chunks = segments.div_ceil(SEGMENTS_PER_CHUNK);
        let work = |chunk: u64, out: &mut Vec<u8>, scratch: &mut Vec<u8>| -> Result<()> {
            let (first, n) = chunk_segments(chunk, segments);
            let sealed_len = |s: u64| (if s == segments - 1 { last_len } else { full }) as usize;
            let total: usize = (first..first + n).map(sealed_len).sum();
            // Scratch: the chunk's sealed bytes, then two segments of room.
            set_len(scratch, total + 2 * size);
            let (sealed, spare) = scratch.split_at_mut(total);
            read_exact_at(input, sealed, start + first * full, "shrank")?;
            let produced: usize = (first..first + n)
                .map(|s| sealed_len(s).saturating_sub(TAG_LEN) + extra)
                .sum();
            set_len(out, produced);
            let (mut at, mut to) = (0, 0);
            for s in first..first + n {
                let len = sealed_len(s);
                let last = s == segments - 1;
                if len < TAG_LEN {
                    // Only the output of the segments before this one is written.
                    out.truncate(to);
                    return Err(EnvelopeError::Truncated(format!(
                        "the input ends inside segment {s}, before its tag"
                    )));
                }
                let slot_len = len - TAG_LEN + extra;
                let result = each(
                    s,
                    last,
                    &sealed[at..at + len],
                    &mut out[to..to + slot_len],
                    spare,
                );
                if let Err(e) = result {
                    out.truncate(to);
                    return Err(e);
                }
                at += len;
                to += slot_len;
            }
            Ok(())
        };
        ordered(threads, chunks, work, sink)?;
        if has_bytes_at(input, length)? {
            return Err(changed("grew"));
        }
        (&*input).seek(SeekFrom::Start(length))?;
        Ok(body - segments * TAG_LEN as u64)
    }
}

/// A file writer that has its bytes written to the disk as they come, rather than all at the
/// sync that makes the file durable: every [`WRITE_BEHIND_STEP`] bytes, a thread of its own
/// syncs what has been written so far (unless it is still at the previous sync), so the disk
/// works while the CPU encrypts, and the final sync has little left to do. It does not make
/// anything durable by itself: sync the file after.
#[derive(Debug)]
pub struct WriteBehind<'a> {
    file: &'a File,
    written: u64,
    next_sync: u64,
    syncs: Option<std::sync::mpsc::SyncSender<()>>,
}

/// How often [`WriteBehind`] asks for a sync.
pub const WRITE_BEHIND_STEP: u64 = 8 << 20;

impl<'a> WriteBehind<'a> {
    /// Writes to `file` from its current position.
    pub fn new(file: &'a File) -> io::Result<Self> {
        let syncer = file.try_clone()?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
        std::thread::spawn(move || {
            while rx.recv().is_ok() {
                // A failure is the final sync's to report.
                let _ = syncer.sync_data();
            }
        });
        Ok(WriteBehind {
            file,
            written: 0,
            next_sync: WRITE_BEHIND_STEP,
            syncs: Some(tx),
        })
    }
}

impl Write for WriteBehind<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = (&mut &*self.file).write(buf)?;
        self.written += n as u64;
        if self.written >= self.next_sync {
            self.next_sync = self.written + WRITE_BEHIND_STEP;
            if let Some(syncs) = &self.syncs {
                // Full: a sync is running or queued, and it will cover these bytes too.
                let _ = syncs.try_send(());
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for WriteBehind<'_> {
    fn drop(&mut self) {
        // Closing the channel ends the thread after its current sync.
        self.syncs = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::DEFAULT_SEGMENT_SIZE;
    use crate::keyring::MasterKey;

    fn master() -> MasterKey {
        MasterKey::generate().unwrap()
    }

    fn file_with(bytes: &[u8]) -> File {
        let mut f = tempfile().unwrap();
        f.write_all(bytes).unwrap();
        f.rewind().unwrap();
        f
    }

    /// A file of `bytes` positioned after its header.
    fn after_header(bytes: &[u8]) -> File {
        let mut f = file_with(bytes);
        crate::Header::read_from(&mut f).unwrap();
        f
    }

    fn tempfile() -> io::Result<File> {
        let dir = std::env::temp_dir();
        let path = dir.join(format!(
            "keyshift-envelope-files-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        std::fs::remove_file(&path)?;
        Ok(f)
    }

    fn copy(r: &crate::stream::FileRandomness) -> crate::stream::FileRandomness {
        crate::stream::FileRandomness {
            salt: r.salt,
            nonce_prefix: r.nonce_prefix,
            data_key: r.data_key.clone(),
        }
    }

    fn threads(n: usize) -> NonZeroUsize {
        NonZeroUsize::new(n).unwrap()
    }

    /// Lengths around every boundary that matters: empty, inside the first segment, exactly
    /// one segment, one chunk, one chunk and a byte, several chunks.
    fn lengths(segment: u64) -> Vec<u64> {
        let chunk = segment * SEGMENTS_PER_CHUNK;
        vec![
            0,
            1,
            segment - 1,
            segment,
            segment + 1,
            chunk - 1,
            chunk,
            chunk + 1,
            3 * chunk + segment / 2,
        ]
    }

    #[test]
    fn the_same_bytes_as_the_stream_for_every_length_and_thread_count() {
        let master = master();
        let segment = 4096u32;
        for length in lengths(u64::from(segment)) {
            let plain: Vec<u8> = (0..length).map(|i| (i * 7 + 3) as u8).collect();
            let mut input = file_with(&plain);
            let random = crate::stream::FileRandomness::generate().unwrap();
            let streamed = Encryptor::three_level_with(&master, b"ctx", segment, copy(&random))
                .unwrap()
                .encrypt_to_vec(&plain)
                .unwrap();
            for n in [1, 2, 3] {
                input.seek(SeekFrom::Start(0)).unwrap();
                let mut out = Vec::new();
                let e =
                    Encryptor::three_level_with(&master, b"ctx", segment, copy(&random)).unwrap();
                assert_eq!(
                    e.encrypt_file(&input, &mut out, threads(n)).unwrap(),
                    length
                );
                assert_eq!(out, streamed, "length {length}, {n} threads");

                let header = crate::Header::read_from(&mut &out[..]).unwrap();
                let d = Decryptor::from_master_key(&header, &master, b"ctx").unwrap();
                let mut back = Vec::new();
                let sealed = after_header(&out);
                assert_eq!(
                    d.decrypt_file(&sealed, &mut back, threads(n)).unwrap(),
                    length
                );
                assert_eq!(back, plain, "length {length}, {n} threads");
            }
        }
    }

    #[test]
    fn reencryption_opens_under_the_new_key_only() {
        let (old, new) = (master(), master());
        let segment = 4096u32;
        for length in lengths(u64::from(segment)) {
            let plain: Vec<u8> = (0..length).map(|i| (i * 13) as u8).collect();
            let sealed = Encryptor::three_level(&old, b"ctx", segment)
                .unwrap()
                .encrypt_to_vec(&plain)
                .unwrap();
            let header = crate::Header::read_from(&mut &sealed[..]).unwrap();
            let d = Decryptor::from_master_key(&header, &old, b"ctx").unwrap();
            let e = Encryptor::three_level(&new, b"ctx", segment).unwrap();
            let mut out = Vec::new();
            let n = d
                .reencrypt_file(&after_header(&sealed), &e, &mut out, threads(2))
                .unwrap();
            assert_eq!(n, length);
            let new_header = crate::Header::read_from(&mut &out[..]).unwrap();
            assert!(Decryptor::from_master_key(&new_header, &old, b"ctx").is_err());
            let back = Decryptor::from_master_key(&new_header, &new, b"ctx")
                .unwrap()
                .decrypt_slice(&out)
                .unwrap();
            assert_eq!(back, plain);
        }
    }

    /// A file is encrypted from where it stands, as a stream would be (`(skip; keyshift
    /// encrypt -) < file`), and left at its end.
    #[test]
    fn encryption_starts_at_the_current_position() {
        let m = master();
        let plain: Vec<u8> = (0..50_000u32).map(|i| i as u8).collect();
        let mut input = file_with(&plain);
        input.seek(SeekFrom::Start(1234)).unwrap();
        let mut out = Vec::new();
        let e = Encryptor::three_level(&m, b"", 4096).unwrap();
        assert_eq!(
            e.encrypt_file(&input, &mut out, threads(2)).unwrap(),
            50_000 - 1234
        );
        assert_eq!(input.stream_position().unwrap(), 50_000);
        let header = crate::Header::read_from(&mut &out[..]).unwrap();
        let back = Decryptor::from_master_key(&header, &m, b"")
            .unwrap()
            .decrypt_slice(&out)
            .unwrap();
        assert_eq!(back, &plain[1234..]);
    }

    #[test]
    fn reencryption_refuses_another_segment_size() {
        let m = master();
        let sealed = Encryptor::three_level(&m, b"", 4096)
            .unwrap()
            .encrypt_to_vec(b"x")
            .unwrap();
        let header = crate::Header::read_from(&mut &sealed[..]).unwrap();
        let d = Decryptor::from_master_key(&header, &m, b"").unwrap();
        let e = Encryptor::three_level(&m, b"", DEFAULT_SEGMENT_SIZE).unwrap();
        let err = d
            .reencrypt_file(&after_header(&sealed), &e, Vec::new(), threads(2))
            .unwrap_err();
        assert!(matches!(err, EnvelopeError::InvalidInput(_)), "{err}");
    }

    /// Every way of damaging a file gives the streaming decryptor's error, and the same count
    /// of plaintext bytes written before it.
    #[test]
    fn damaged_files_fail_as_they_do_in_the_stream() {
        let m = master();
        let segment = 4096usize;
        let full = segment + TAG_LEN;
        let plain: Vec<u8> = (0..(3 * SEGMENTS_PER_CHUNK as usize * segment + 100))
            .map(|i| i as u8)
            .collect();
        let sealed = Encryptor::three_level(&m, b"c", segment as u32)
            .unwrap()
            .encrypt_to_vec(&plain)
            .unwrap();
        let header = crate::Header::read_from(&mut &sealed[..]).unwrap();
        let h = header.len();
        let d = Decryptor::from_master_key(&header, &m, b"c").unwrap();
        let segments = plain.len().div_ceil(segment);
        let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
        let mut flipped = sealed.clone();
        flipped[h + 20 * full + 5] ^= 1;
        cases.push(("a flipped byte in segment 20", flipped));
        let mut tag = sealed.clone();
        let last_tag = sealed.len() - 1;
        tag[last_tag] ^= 0x80;
        cases.push(("the last tag changed", tag));
        cases.push((
            "cut at a segment boundary",
            sealed[..h + 33 * full].to_vec(),
        ));
        cases.push(("cut inside a tag", sealed[..h + 33 * full + 7].to_vec()));
        cases.push((
            "cut inside a segment",
            sealed[..h + 17 * full + 900].to_vec(),
        ));
        cases.push(("only the header", sealed[..h].to_vec()));
        let mut appended = sealed.clone();
        appended.extend_from_slice(b"more");
        cases.push(("data appended", appended));
        let mut extra = sealed.clone();
        extra.extend_from_slice(&sealed[h + 2 * full..h + 3 * full]);
        cases.push(("a whole segment appended", extra));
        let mut swapped = sealed.clone();
        let (a, b) = (h + 3 * full, h + 4 * full);
        let seg3 = sealed[a..a + full].to_vec();
        swapped.copy_within(b..b + full, a);
        swapped[b..b + full].copy_from_slice(&seg3);
        cases.push(("two segments swapped", swapped));
        assert!(segments > 2 * SEGMENTS_PER_CHUNK as usize);
        for (what, bytes) in cases {
            let streamed = d
                .decrypt_stream(&bytes[h.min(bytes.len())..], Vec::new())
                .unwrap_err();
            for n in [1, 2, 3] {
                let parallel = d
                    .decrypt_file(&after_header(&bytes), Vec::new(), threads(n))
                    .unwrap_err();
                assert_eq!(
                    parallel.error.to_string(),
                    streamed.error.to_string(),
                    "{what}, {n} threads"
                );
                assert_eq!(
                    parallel.plaintext_written, streamed.plaintext_written,
                    "{what}, {n} threads"
                );
            }
            let e = Encryptor::three_level(&m, b"c", segment as u32).unwrap();
            let err = d
                .reencrypt_file(&after_header(&bytes), &e, Vec::new(), threads(2))
                .unwrap_err();
            assert_eq!(err.to_string(), streamed.error.to_string(), "{what}");
        }
    }

    #[test]
    fn write_behind_writes_every_byte() {
        let f = tempfile().unwrap();
        let data: Vec<u8> = (0..(3 * WRITE_BEHIND_STEP + 12345))
            .map(|i| (i % 251) as u8)
            .collect();
        let mut w = WriteBehind::new(&f).unwrap();
        for piece in data.chunks(1 << 20) {
            w.write_all(piece).unwrap();
        }
        w.flush().unwrap();
        let mut back = vec![0u8; data.len()];
        f.read_exact_at(&mut back, 0).unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn a_failing_writer_stops_the_run() {
        struct Full(usize);
        impl Write for Full {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::other("disk full"));
                }
                self.0 -= 1;
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let m = master();
        let plain = vec![7u8; 40 * 4096];
        let e = Encryptor::three_level(&m, b"", 4096).unwrap();
        let err = e
            .encrypt_file(&file_with(&plain), Full(2), threads(2))
            .unwrap_err();
        assert!(err.to_string().contains("disk full"), "{err}");
    }
}
