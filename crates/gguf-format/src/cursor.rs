//! A bounds-checked little-endian reader over the file bytes. Every read checks the remaining
//! length first, so a hostile count or length fails before anything is allocated.

use crate::{Error, Result};

/// Produces a description of the item being read, only when an error needs it.
pub(crate) type What<'w> = &'w dyn Fn() -> String;

/// A position in a byte buffer.
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Current offset from the start of the file.
    pub(crate) fn pos(&self) -> u64 {
        self.pos as u64
    }

    /// Bytes left.
    pub(crate) fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    /// Fails unless `count * unit` bytes remain (saturating, so absurd counts fail cleanly).
    pub(crate) fn ensure(&self, count: u64, unit: u64, what: What<'_>) -> Result<()> {
        let needed = count.saturating_mul(unit);
        if needed > self.remaining() {
            return Err(self.truncated(needed, what));
        }
        Ok(())
    }

    fn truncated(&self, needed: u64, what: What<'_>) -> Error {
        Error::Truncated {
            what: what(),
            offset: self.pos(),
            needed,
            available: self.remaining(),
        }
    }

    /// The next `n` bytes.
    pub(crate) fn take(&mut self, n: u64, what: What<'_>) -> Result<&'a [u8]> {
        self.ensure(n, 1, what)?;
        let start = self.pos;
        // `ensure` proved n <= remaining, so this cannot overflow or run past the end.
        self.pos += n as usize;
        Ok(&self.buf[start..self.pos])
    }

    /// The next `N` bytes as an array.
    pub(crate) fn array<const N: usize>(&mut self, what: What<'_>) -> Result<[u8; N]> {
        let bytes = self.take(N as u64, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    pub(crate) fn u32(&mut self, what: What<'_>) -> Result<u32> {
        self.array(what).map(u32::from_le_bytes)
    }

    pub(crate) fn u64(&mut self, what: What<'_>) -> Result<u64> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// A GGUF string (`u64` length + UTF-8 bytes), borrowed from the buffer.
    pub(crate) fn str(&mut self, what: What<'_>) -> Result<&'a str> {
        let len = self.u64(what)?;
        let offset = self.pos();
        let bytes = self.take(len, what)?;
        std::str::from_utf8(bytes).map_err(|source| Error::InvalidUtf8 {
            what: what(),
            offset,
            source,
        })
    }

    /// `count` fixed-size little-endian elements decoded by `conv` (count checked first).
    pub(crate) fn le_vec<T, const N: usize>(
        &mut self,
        count: u64,
        conv: fn([u8; N]) -> T,
        what: What<'_>,
    ) -> Result<Vec<T>> {
        let bytes = self.take(count.saturating_mul(N as u64), what)?;
        Ok(bytes
            .chunks_exact(N)
            .map(|c| {
                let mut a = [0u8; N];
                a.copy_from_slice(c);
                conv(a)
            })
            .collect())
    }
}
