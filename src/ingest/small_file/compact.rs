//! The Thrift compact protocol, as much of it as a Parquet footer and page header need (the
//! small-file encoder's, [`super`]), and the RLE/bit-packed hybrid encoding of dictionary
//! indices. Written here rather than taken from parquet-rs, whose Thrift types are built per
//! value and were most of a small file's cost.

pub const I32: u8 = 5;
pub const BINARY: u8 = 8;
pub const STRUCT: u8 = 12;

pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub fn uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A struct being written: field ids are written as deltas from the last one of the
/// innermost struct.
pub struct Writer {
    out: Vec<u8>,
    last: Vec<i16>,
}

impl Default for Writer {
    fn default() -> Writer {
        Writer {
            out: Vec::new(),
            last: vec![0],
        }
    }
}

impl Writer {
    fn field(&mut self, id: i16, ty: u8) {
        let last = self.last.last().copied().unwrap_or(0);
        let delta = id - last;
        if (1..=15).contains(&delta) {
            self.out.push(((delta as u8) << 4) | ty);
        } else {
            self.out.push(ty);
            uvarint(&mut self.out, zigzag(id as i64));
        }
        if let Some(last) = self.last.last_mut() {
            *last = id;
        }
    }
    pub fn varint(&mut self, v: u64) {
        uvarint(&mut self.out, v);
    }
    pub fn bytes(&mut self, b: &[u8]) {
        self.out.extend_from_slice(b);
    }
    pub fn bool(&mut self, id: i16, v: bool) {
        self.field(id, if v { 1 } else { 2 });
    }
    pub fn i16(&mut self, id: i16, v: i16) {
        self.field(id, 4);
        self.varint(zigzag(v as i64));
    }
    pub fn i32(&mut self, id: i16, v: i32) {
        self.field(id, I32);
        self.varint(zigzag(v as i64));
    }
    pub fn i64(&mut self, id: i16, v: i64) {
        self.field(id, 6);
        self.varint(zigzag(v));
    }
    pub fn binary(&mut self, id: i16, b: &[u8]) {
        self.field(id, BINARY);
        self.varint(b.len() as u64);
        self.bytes(b);
    }
    /// A field whose value is already encoded.
    pub fn raw(&mut self, id: i16, ty: u8, value: &[u8]) {
        self.field(id, ty);
        self.bytes(value);
    }
    pub fn list(&mut self, id: i16, elements: u8, n: usize) {
        self.field(id, 9);
        if n < 15 {
            self.out.push(((n as u8) << 4) | elements);
        } else {
            self.out.push(0xF0 | elements);
            self.varint(n as u64);
        }
    }
    /// A struct field.
    pub fn begin_struct(&mut self, id: i16) {
        self.field(id, STRUCT);
        self.begin();
    }
    /// A struct as a list element.
    pub fn begin(&mut self) {
        self.last.push(0);
    }
    pub fn end(&mut self) {
        self.out.push(0);
        self.last.pop();
    }
    pub fn into_bytes(self) -> Vec<u8> {
        self.out
    }
}

/// The top-level fields of a struct: (id, type, value bytes), up to its stop.
pub fn top_level_fields(bytes: &[u8]) -> Option<Vec<(i16, u8, Vec<u8>)>> {
    let mut at = 0;
    let mut last = 0i16;
    let mut fields = Vec::new();
    loop {
        let header = *bytes.get(at)?;
        at += 1;
        if header == 0 {
            return Some(fields);
        }
        let ty = header & 0x0F;
        let id = match header >> 4 {
            0 => {
                let (v, n) = read_uvarint(bytes.get(at..)?)?;
                at += n;
                ((v >> 1) as i64 ^ -((v & 1) as i64)) as i16
            }
            delta => last + delta as i16,
        };
        last = id;
        let start = at;
        at = skip(bytes, at, ty)?;
        fields.push((id, ty, bytes[start..at].to_vec()));
    }
}

fn read_uvarint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, b) in bytes.iter().enumerate().take(10) {
        v |= ((b & 0x7F) as u64) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// The position after a value of type `ty` at `at`.
fn skip(bytes: &[u8], mut at: usize, ty: u8) -> Option<usize> {
    match ty {
        1 | 2 => Some(at),
        3 => Some(at + 1),
        4..=6 => Some(at + read_uvarint(bytes.get(at..)?)?.1),
        7 => Some(at + 8),
        8 => {
            let (len, n) = read_uvarint(bytes.get(at..)?)?;
            Some(at + n + len as usize)
        }
        9 | 10 => {
            let header = *bytes.get(at)?;
            at += 1;
            let mut n = (header >> 4) as u64;
            if n == 15 {
                let (v, k) = read_uvarint(bytes.get(at..)?)?;
                n = v;
                at += k;
            }
            let elements = header & 0x0F;
            for _ in 0..n {
                // Booleans in a list take a byte each.
                at = if elements == 1 || elements == 2 {
                    at + 1
                } else {
                    skip(bytes, at, elements)?
                };
            }
            Some(at)
        }
        11 => {
            let (n, k) = read_uvarint(bytes.get(at..)?)?;
            at += k;
            if n == 0 {
                return Some(at);
            }
            let types = *bytes.get(at)?;
            at += 1;
            // Booleans as keys or values take a byte each.
            let one = |at: usize, ty: u8| match ty {
                1 | 2 => Some(at + 1),
                _ => skip(bytes, at, ty),
            };
            for _ in 0..n {
                at = one(at, types >> 4)?;
                at = one(at, types & 0x0F)?;
            }
            Some(at)
        }
        12 => loop {
            let header = *bytes.get(at)?;
            at += 1;
            if header == 0 {
                return Some(at);
            }
            if header >> 4 == 0 {
                at += read_uvarint(bytes.get(at..)?)?.1;
            }
            at = skip(bytes, at, header & 0x0F)?;
        },
        _ => None,
    }
}

/// The RLE/bit-packed hybrid encoding of `values`, all in bit-packed groups of eight (the last
/// padded with zeros; the page's value count says where they end).
pub fn bit_packed(out: &mut Vec<u8>, values: &[u32], width: usize) {
    let groups = values.len().div_ceil(8);
    uvarint(out, ((groups as u64) << 1) | 1);
    let start = out.len();
    out.resize(start + groups * width, 0);
    for (i, &v) in values.iter().enumerate() {
        for b in 0..width {
            if v >> b & 1 == 1 {
                let bit = i * width + b;
                out[start + bit / 8] |= 1 << (bit % 8);
            }
        }
    }
}
