//! A cursor over fuzz input bytes that never fails: reads past the end give zeros, so every
//! byte string is a valid input and the harnesses stay total functions.
//!
//! Shared (via `#[path]`) by the fuzz targets and the corpus replay tests in the crates.

/// Reads little-endian numbers and slices off the front of the input.
pub struct Input<'a> {
    data: &'a [u8],
}

#[allow(dead_code)] // each harness uses a different subset
impl<'a> Input<'a> {
    /// A cursor at the start of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    /// Whether every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// One byte (0 past the end).
    pub fn u8(&mut self) -> u8 {
        let (&b, rest) = self.data.split_first().unwrap_or((&0, &[]));
        self.data = rest;
        b
    }

    /// A little-endian `u16`.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    /// A little-endian `u32`.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// A little-endian `i32`.
    pub fn i32(&mut self) -> i32 {
        self.u32() as i32
    }

    /// Up to `n` bytes (fewer at the end).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        self.bytes(self.data.len())
    }
}

/// Replays every file of the corpus folder `dir` through `run` (the harness of fuzz target
/// `target`), printing each input's outcome: the corpus replay tests of the crates. A panic
/// names the input first; `cargo +nightly fuzz run TARGET FILE` reproduces it.
///
/// # Errors
/// When the folder cannot be read or is empty.
#[allow(dead_code)] // used by the replay tests, not by the fuzz targets
pub fn replay_corpus(
    dir: &std::path::Path,
    target: &str,
    run: fn(&[u8]) -> String,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.sort();
    if files.is_empty() {
        return Err(format!("{} is empty", dir.display()).into());
    }
    for file in &files {
        let data = std::fs::read(file)?;
        eprintln!("{target}: {}", file.display());
        let outcome = run(&data);
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        println!("{name:<48} {} bytes: {outcome}", data.len());
    }
    println!("{} inputs replayed", files.len());
    Ok(())
}
