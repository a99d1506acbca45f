//! A message's bytes on their way out, so that memory does not grow with the message: a
//! `Spool` holds bytes in memory when they are few and in a private, nameless temporary
//! file when they are many (or a range of a file, as a queue entry's message); a `Payload`
//! is the message to send as a list of parts (header bytes edited in memory, then spooled
//! bytes), read as a stream as many times as a sender needs: the SMTP codec (CRLF,
//! dot-stuffing, BDAT sizes), Microsoft Graph's encoder, the queue.

use std::borrow::Cow;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Input past this many bytes goes to a temporary file rather than staying in memory.
pub const IN_MEMORY_MAX: usize = 1 << 20;

/// Bytes read once, from memory or from a file, as many times as needed.
#[derive(Debug)]
pub struct Spool {
    store: Store,
}

#[derive(Debug)]
enum Store {
    Memory(Vec<u8>),
    /// `len` bytes of `file` from `start` on. Reads are positioned (`pread`), so readers
    /// never share a cursor.
    File {
        file: File,
        start: u64,
        len: u64,
    },
}

impl Spool {
    #[must_use]
    pub fn memory(bytes: Vec<u8>) -> Spool {
        Spool {
            store: Store::Memory(bytes),
        }
    }

    /// `len` bytes of `file` from `start` on (a queue entry's message after its first line).
    #[must_use]
    pub fn file_range(file: File, start: u64, len: u64) -> Spool {
        Spool {
            store: Store::File { file, start, len },
        }
    }

    #[must_use]
    pub fn len(&self) -> u64 {
        match &self.store {
            Store::Memory(b) => b.len() as u64,
            Store::File { len, .. } => *len,
        }
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads from `pos` (relative to the spool's start) into `buf`; 0 at the end.
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.len().saturating_sub(pos);
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        match &self.store {
            Store::Memory(b) => {
                let pos = usize::try_from(pos).unwrap_or(usize::MAX).min(b.len());
                buf[..want].copy_from_slice(&b[pos..pos + want]);
                Ok(want)
            }
            Store::File { file, start, .. } => {
                if want == 0 {
                    return Ok(0);
                }
                let n = file.read_at(&mut buf[..want], start + pos)?;
                if n == 0 {
                    // The file is shorter than it was: never pass that off as the end.
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the spooled message is shorter than written",
                    ));
                }
                Ok(n)
            }
        }
    }
}

/// Collects bytes in memory up to `IN_MEMORY_MAX`, then moves them to a temporary file in
/// `dir` and appends there.
pub struct SpoolWriter<'d> {
    in_memory_max: usize,
    memory: Vec<u8>,
    file: Option<(File, u64)>,
    dir: Option<&'d Path>,
}

impl<'d> SpoolWriter<'d> {
    /// `dir`: the private folder for the temporary file (`None`: the system's temporary
    /// folder; the file has no name either way).
    /// `in_memory_max`: the most bytes kept in memory (`IN_MEMORY_MAX` but in tests).
    #[must_use]
    pub fn new(dir: Option<&'d Path>, in_memory_max: usize) -> SpoolWriter<'d> {
        SpoolWriter {
            in_memory_max,
            memory: Vec::new(),
            file: None,
            dir,
        }
    }

    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        if let Some((file, len)) = &mut self.file {
            file.write_all(bytes)?;
            *len += bytes.len() as u64;
            return Ok(());
        }
        self.memory.extend_from_slice(bytes);
        if self.memory.len() > self.in_memory_max {
            let mut file = temp_file(self.dir)?;
            file.write_all(&self.memory)?;
            let len = self.memory.len() as u64;
            self.memory = Vec::new();
            self.file = Some((file, len));
        }
        Ok(())
    }

    pub fn finish(self) -> io::Result<Spool> {
        match self.file {
            None => Ok(Spool::memory(self.memory)),
            Some((mut file, len)) => {
                file.flush()?;
                Ok(Spool::file_range(file, 0, len))
            }
        }
    }
}

/// A `0600` file without a name (`O_TMPFILE`): nobody else can open it, and it is gone
/// when the process ends, however it ends. Where the file system has no `O_TMPFILE`, a
/// named `0600` file is created and unlinked at once.
fn temp_file(dir: Option<&Path>) -> io::Result<File> {
    let dir = dir.map_or_else(std::env::temp_dir, Path::to_path_buf);
    let flags =
        rustix::fs::OFlags::TMPFILE | rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC;
    if let Ok(fd) = rustix::fs::open(&dir, flags, rustix::fs::Mode::from_raw_mode(0o600)) {
        return Ok(File::from(fd));
    }
    let mut random = [0u8; 8];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random);
    let path = dir.join(format!(
        ".spool.{}.{:016x}",
        std::process::id(),
        u64::from_le_bytes(random)
    ));
    let file = crate::private_dir::open(
        &path,
        OpenOptions::new().read(true).write(true).create_new(true),
    )?;
    std::fs::remove_file(&path)?;
    Ok(file)
}

/// The message to send: parts one after another.
#[derive(Debug, Default)]
pub struct Payload<'a> {
    parts: Vec<Part<'a>>,
}

#[derive(Debug)]
enum Part<'a> {
    Bytes(Cow<'a, [u8]>),
    Spool(&'a Spool),
}

impl<'a> Payload<'a> {
    #[must_use]
    pub fn new() -> Payload<'a> {
        Payload { parts: Vec::new() }
    }

    /// A message held in memory as slices.
    #[cfg(test)]
    #[must_use]
    pub fn from_slices(slices: &[&'a [u8]]) -> Payload<'a> {
        let mut p = Payload::new();
        for s in slices {
            p.push_bytes(Cow::Borrowed(s));
        }
        p
    }

    pub fn push_bytes(&mut self, bytes: Cow<'a, [u8]>) {
        if !bytes.is_empty() {
            self.parts.push(Part::Bytes(bytes));
        }
    }

    pub fn push_spool(&mut self, spool: &'a Spool) {
        if !spool.is_empty() {
            self.parts.push(Part::Spool(spool));
        }
    }

    /// The number of bytes.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Bytes(b) => b.len() as u64,
                Part::Spool(s) => s.len(),
            })
            .sum()
    }

    /// A stream of the bytes from the start; each call starts again.
    #[must_use]
    pub fn reader(&self) -> PayloadReader<'_, 'a> {
        PayloadReader {
            payload: self,
            part: 0,
            pos: 0,
        }
    }

    /// All of it in memory (for a consumer that needs it whole and has checked the size).
    pub fn to_vec(&self) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(usize::try_from(self.len()).unwrap_or(0));
        self.reader().read_to_end(&mut out)?;
        Ok(out)
    }
}

/// Reads a `Payload` from its start.
pub struct PayloadReader<'p, 'a> {
    payload: &'p Payload<'a>,
    part: usize,
    pos: u64,
}

impl Read for PayloadReader<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while let Some(part) = self.payload.parts.get(self.part) {
            let n = match part {
                Part::Bytes(b) => {
                    let rest = b.get(usize::try_from(self.pos).unwrap_or(usize::MAX)..);
                    let rest = rest.unwrap_or_default();
                    let n = rest.len().min(buf.len());
                    buf[..n].copy_from_slice(&rest[..n]);
                    n
                }
                Part::Spool(s) => s.read_at(self.pos, buf)?,
            };
            if n > 0 || buf.is_empty() {
                self.pos += n as u64;
                return Ok(n);
            }
            self.part += 1;
            self.pos = 0;
        }
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(p: &Payload<'_>, piece: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut r = p.reader();
        let mut buf = vec![0u8; piece];
        loop {
            let n = r.read(&mut buf).unwrap();
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    #[test]
    fn a_large_input_goes_to_a_nameless_file_and_reads_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = SpoolWriter::new(Some(dir.path()), IN_MEMORY_MAX);
        let chunk: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
        let mut expected = Vec::new();
        for _ in 0..15 {
            w.write(&chunk).unwrap();
            expected.extend_from_slice(&chunk);
        }
        let spool = w.finish().unwrap();
        assert!(matches!(spool.store, Store::File { .. }));
        assert_eq!(spool.len(), expected.len() as u64);
        // Nothing with a name is left in the folder.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let mut p = Payload::new();
        p.push_bytes(Cow::Borrowed(b"Head: x\n\n"));
        p.push_spool(&spool);
        let mut whole = b"Head: x\n\n".to_vec();
        whole.extend_from_slice(&expected);
        for piece in [7, 4096, 65536] {
            assert_eq!(read_all(&p, piece), whole);
        }
        assert_eq!(p.len(), whole.len() as u64);
        assert_eq!(p.to_vec().unwrap(), whole);
    }

    #[test]
    fn a_small_input_stays_in_memory() {
        let mut w = SpoolWriter::new(None, IN_MEMORY_MAX);
        w.write(b"abc").unwrap();
        let spool = w.finish().unwrap();
        assert!(matches!(spool.store, Store::Memory(_)));
        let p = Payload {
            parts: vec![Part::Bytes(Cow::Borrowed(b"12")), Part::Spool(&spool)],
        };
        assert_eq!(read_all(&p, 1), b"12abc");
        assert_eq!(read_all(&p, 100), b"12abc");
    }
}
