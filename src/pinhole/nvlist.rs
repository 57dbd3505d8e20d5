//! A small packer and reader for FreeBSD's nvlist wire format (libnv's `nvlist_pack` /
//! `nvlist_unpack`), which pf's `DIOC*NV` ioctls take and give.
//!
//! Why not a crate: the `libnv` bindings need bindgen and FreeBSD's headers at build time, so
//! they cannot be compiled (or cross-checked) on Linux, and no portable crate packs the format.
//! ftpgate needs only what pf's rule, state-kill and rule-query requests use: numbers, strings,
//! booleans, number arrays, binaries and nested lists. Keeping this pure lets its tests run on
//! any host.
//!
//! The format, from `sys/contrib/libnv/nvlist.c` and `nvpair.c` (identical in FreeBSD 13, 14
//! and 15): a list is a 19-byte packed header
//!
//! ```text
//! u8 magic 0x6c ('l') | u8 version 0 | u8 flags | u64 descriptors | u64 size
//! ```
//!
//! (`size` = every byte that follows this header in the whole buffer), then its pairs. A pair is
//! a 19-byte packed header `u8 type | u16 namesize | u64 datasize | u64 nitems`, the name with
//! its NUL (`namesize` counts it), then the data. Integers are in the host's order; flag 0x80
//! says big-endian (only written on big-endian hosts). A nested list is a pair of type
//! NVLIST whose data is the child's own header and pairs, closed by an NVLIST_UP pair (type
//! 255, name "", no data); its `datasize` is `nvlist_size()` of the child.

const HEADER_MAGIC: u8 = 0x6c;
const HEADER_VERSION: u8 = 0;
const FLAG_BIG_ENDIAN: u8 = 0x80;
/// `sizeof(struct nvlist_header)` and `sizeof(struct nvpair_header)`, both `__packed`.
const LIST_HEADER: usize = 19;
const PAIR_HEADER: usize = 19;

const TYPE_BOOL: u8 = 2;
const TYPE_NUMBER: u8 = 3;
const TYPE_STRING: u8 = 4;
const TYPE_NVLIST: u8 = 5;
const TYPE_BINARY: u8 = 7;
const TYPE_NUMBER_ARRAY: u8 = 9;
const TYPE_NVLIST_UP: u8 = 255;

/// Nested lists deeper than this are refused when reading (pf's go three levels deep).
const MAX_DEPTH: usize = 16;

/// One value of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Bool(bool),
    Number(u64),
    String(String),
    Binary(Vec<u8>),
    NumberArray(Vec<u64>),
    List(NvList),
}

/// An ordered list of uniquely named values (libnv's default, `NV_FLAG_NO_UNIQUE` unset).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NvList {
    pairs: Vec<(String, Value)>,
}

impl NvList {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a value; returns the list for chaining.
    pub fn with(mut self, name: &str, value: Value) -> Self {
        self.set(name, value);
        self
    }

    pub fn set(&mut self, name: &str, value: Value) {
        match self.pairs.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = value,
            None => self.pairs.push((name.to_owned(), value)),
        }
    }

    pub fn num(self, name: &str, n: u64) -> Self {
        self.with(name, Value::Number(n))
    }

    pub fn string(self, name: &str, s: &str) -> Self {
        self.with(name, Value::String(s.to_owned()))
    }

    pub fn list(self, name: &str, l: NvList) -> Self {
        self.with(name, Value::List(l))
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.pairs.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    pub fn get_number(&self, name: &str) -> Option<u64> {
        match self.get(name) {
            Some(Value::Number(n)) => Some(*n),
            _ => None,
        }
    }

    pub fn get_list(&self, name: &str) -> Option<&NvList> {
        match self.get(name) {
            Some(Value::List(l)) => Some(l),
            _ => None,
        }
    }

    /// `nvlist_size()`: the packed size of this list as a nested value counts it (the
    /// children's closing NVLIST_UP pairs included, this list's own not).
    fn size(&self) -> usize {
        LIST_HEADER
            + self
                .pairs
                .iter()
                .map(|(name, v)| {
                    PAIR_HEADER
                        + name.len()
                        + 1
                        + match v {
                            Value::List(l) => l.size() + PAIR_HEADER + 1,
                            other => data_len(other),
                        }
                })
                .sum::<usize>()
    }

    /// `nvlist_pack()`: the bytes the kernel's `nvlist_unpack()` reads back as this list.
    pub fn pack(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.size() + PAIR_HEADER + 1);
        // The total length is needed for every list header, so pack first, then patch.
        let mut headers = Vec::new();
        self.pack_into(&mut out, &mut headers, true);
        let total = out.len();
        for at in headers {
            let rest = (total - at - LIST_HEADER) as u64;
            out[at + 11..at + 19].copy_from_slice(&rest.to_ne_bytes());
        }
        out
    }

    fn pack_into(&self, out: &mut Vec<u8>, headers: &mut Vec<usize>, top: bool) {
        headers.push(out.len());
        out.push(HEADER_MAGIC);
        out.push(HEADER_VERSION);
        out.push(if cfg!(target_endian = "big") { FLAG_BIG_ENDIAN } else { 0 });
        out.extend_from_slice(&0u64.to_ne_bytes()); // no descriptors
        out.extend_from_slice(&0u64.to_ne_bytes()); // size, patched by pack()
        for (name, value) in &self.pairs {
            let (ty, datasize, nitems) = match value {
                Value::Bool(_) => (TYPE_BOOL, 1, 0),
                Value::Number(_) => (TYPE_NUMBER, 8, 0),
                Value::String(s) => (TYPE_STRING, s.len() + 1, 0),
                Value::Binary(b) => (TYPE_BINARY, b.len(), 0),
                Value::NumberArray(a) => (TYPE_NUMBER_ARRAY, a.len() * 8, a.len()),
                Value::List(l) => (TYPE_NVLIST, l.size(), 0),
            };
            pair_header(out, ty, name, datasize as u64, nitems as u64);
            match value {
                Value::Bool(b) => out.push(u8::from(*b)),
                Value::Number(n) => out.extend_from_slice(&n.to_ne_bytes()),
                Value::String(s) => {
                    out.extend_from_slice(s.as_bytes());
                    out.push(0);
                }
                Value::Binary(b) => out.extend_from_slice(b),
                Value::NumberArray(a) => a.iter().for_each(|n| out.extend_from_slice(&n.to_ne_bytes())),
                Value::List(l) => l.pack_into(out, headers, false),
            }
        }
        if !top {
            pair_header(out, TYPE_NVLIST_UP, "", 0, 0);
        }
    }

    /// `nvlist_unpack()` of what the kernel answered. Unknown value types are an error, not
    /// skipped: their data could not be told apart from what follows.
    pub fn unpack(buf: &[u8]) -> Result<NvList, NvError> {
        let mut r = Reader { buf, at: 0, big: false };
        r.list_header()?;
        let mut stack: Vec<(String, NvList)> = Vec::new();
        let mut cur = NvList::new();
        while r.at < buf.len() {
            let (ty, name, datasize, nitems) = r.pair_header()?;
            let value = match ty {
                TYPE_NVLIST_UP => {
                    let (name, mut parent) = stack.pop().ok_or(NvError("an NVLIST_UP pair outside a nested list"))?;
                    parent.pairs.push((name, Value::List(std::mem::take(&mut cur))));
                    cur = parent;
                    continue;
                }
                TYPE_NVLIST => {
                    if stack.len() >= MAX_DEPTH {
                        return Err(NvError("nested lists too deep"));
                    }
                    r.list_header()?;
                    stack.push((name, std::mem::take(&mut cur)));
                    continue;
                }
                TYPE_BOOL if datasize == 1 => match r.take(1)?[0] {
                    0 => Value::Bool(false),
                    1 => Value::Bool(true),
                    _ => return Err(NvError("a boolean other than 0 or 1")),
                },
                TYPE_NUMBER if datasize == 8 => Value::Number(r.u64()?),
                TYPE_STRING => {
                    let raw = r.take(datasize)?;
                    match raw.split_last() {
                        Some((0, s)) if !s.contains(&0) => Value::String(
                            String::from_utf8(s.to_vec()).map_err(|_| NvError("a string that is not UTF-8"))?,
                        ),
                        _ => return Err(NvError("a string without its single terminating NUL")),
                    }
                }
                TYPE_BINARY => Value::Binary(r.take(datasize)?.to_vec()),
                TYPE_NUMBER_ARRAY if Some(datasize) == nitems.checked_mul(8) => {
                    Value::NumberArray((0..nitems).map(|_| r.u64()).collect::<Result<_, _>>()?)
                }
                _ => return Err(NvError("a value of a type or size this reader does not take")),
            };
            cur.pairs.push((name, value));
        }
        if !stack.is_empty() {
            return Err(NvError("a nested list is not closed"));
        }
        Ok(cur)
    }
}

fn data_len(v: &Value) -> usize {
    match v {
        Value::Bool(_) => 1,
        Value::Number(_) => 8,
        Value::String(s) => s.len() + 1,
        Value::Binary(b) => b.len(),
        Value::NumberArray(a) => a.len() * 8,
        Value::List(l) => l.size(),
    }
}

fn pair_header(out: &mut Vec<u8>, ty: u8, name: &str, datasize: u64, nitems: u64) {
    out.push(ty);
    out.extend_from_slice(&((name.len() + 1) as u16).to_ne_bytes());
    out.extend_from_slice(&datasize.to_ne_bytes());
    out.extend_from_slice(&nitems.to_ne_bytes());
    out.extend_from_slice(name.as_bytes());
    out.push(0);
}

/// A packed list that does not read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed nvlist: {0}")]
pub struct NvError(&'static str);

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
    big: bool,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], NvError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or(NvError("truncated"))?;
        let s = &self.buf[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u64(&mut self) -> Result<u64, NvError> {
        let b: [u8; 8] = self.take(8)?.try_into().map_err(|_| NvError("truncated"))?;
        Ok(if self.big { u64::from_be_bytes(b) } else { u64::from_le_bytes(b) })
    }

    fn u16(&mut self) -> Result<u16, NvError> {
        let b: [u8; 2] = self.take(2)?.try_into().map_err(|_| NvError("truncated"))?;
        Ok(if self.big { u16::from_be_bytes(b) } else { u16::from_le_bytes(b) })
    }

    fn list_header(&mut self) -> Result<(), NvError> {
        let h = self.take(3)?;
        if h[0] != HEADER_MAGIC || h[1] != HEADER_VERSION {
            return Err(NvError("bad list header magic or version"));
        }
        self.big = h[2] & FLAG_BIG_ENDIAN != 0;
        let _descriptors = self.u64()?;
        let size = self.u64()?;
        if size != (self.buf.len() - self.at) as u64 {
            return Err(NvError("list header size does not match the buffer"));
        }
        Ok(())
    }

    fn pair_header(&mut self) -> Result<(u8, String, usize, usize), NvError> {
        let ty = self.take(1)?[0];
        let namesize = self.u16()? as usize;
        let datasize = usize::try_from(self.u64()?).map_err(|_| NvError("data size too large"))?;
        let nitems = usize::try_from(self.u64()?).map_err(|_| NvError("item count too large"))?;
        let raw = self.take(namesize)?;
        let name = match raw.split_last() {
            Some((0, s)) if !s.contains(&0) => {
                String::from_utf8(s.to_vec()).map_err(|_| NvError("a name that is not UTF-8"))?
            }
            _ => return Err(NvError("a name without its single terminating NUL")),
        };
        if datasize > self.buf.len() - self.at {
            return Err(NvError("data size beyond the buffer"));
        }
        Ok((ty, name, datasize, nitems))
    }
}

/// The values of a list by name (tests check which fields a request carries).
#[cfg(test)]
pub fn names(l: &NvList) -> std::collections::BTreeMap<&str, &Value> {
    l.pairs.iter().map(|(n, v)| (n.as_str(), v)).collect()
}

#[cfg(test)]
#[path = "nvlist_tests.rs"]
mod tests;
