//! The bounds-checked cursor under both binary parsers: [`crate::tpm2`] (big-endian TPM
//! structures) and [`crate::eventlog`] (little-endian firmware event logs). Each wraps it in a
//! reader that turns a [`Short`] read into its own error type, naming what was being read.

/// Position in untrusted bytes; never reads past the end.
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

/// A read past the end: `need` bytes at `offset`, but only `have` left.
pub(crate) struct Short {
    pub(crate) offset: usize,
    pub(crate) need: usize,
    pub(crate) have: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Offset of the next byte to read.
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// Bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// The next `n` bytes.
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], Short> {
        let have = self.remaining();
        if n > have {
            return Err(Short {
                offset: self.pos,
                need: n,
                have,
            });
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// The next `N` bytes, for `from_{be,le}_bytes`.
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], Short> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
}
