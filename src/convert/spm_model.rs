//! SentencePiece `tokenizer.model` files: the pieces of a `ModelProto` protobuf (read), and a
//! minimal `ModelProto` for a llama.cpp SentencePiece vocabulary (write).
//!
//! The schema (sentencepiece_model.proto) parts used here:
//!
//! ```text
//! message ModelProto {
//!   repeated SentencePiece pieces = 1;   // { string piece = 1; float score = 2; Type type = 3; }
//!   TrainerSpec trainer_spec = 2;        // model_type = 3 (BPE = 2), vocab_size = 4,
//!                                        // unk_id = 40, bos_id = 41, eos_id = 42, pad_id = 43,
//!                                        // byte_fallback = 35
//!   NormalizerSpec normalizer_spec = 3;  // name = 1, add_dummy_prefix = 3,
//!                                        // remove_extra_whitespaces = 4, escape_whitespaces = 5
//! }
//! Type: NORMAL = 1, UNKNOWN = 2, CONTROL = 3, USER_DEFINED = 4, UNUSED = 5, BYTE = 6
//! ```
//!
//! Decoding never panics: a truncated or malformed file is an error naming what is wrong.

/// One piece of the vocabulary.
#[derive(Debug, Clone, PartialEq)]
pub struct Piece {
    pub piece: String,
    pub score: f32,
    /// SentencePiece's type (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte).
    pub kind: i32,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self
                .buf
                .get(self.pos)
                .ok_or("truncated varint (file ends early)")?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| format!("field of {n} bytes runs past the end of its message"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// Next (field number, wire type, payload). Varints come back as their value in `u64`.
    fn field(&mut self) -> Result<Option<(u64, Field<'a>)>, String> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let (num, wire) = (key >> 3, key & 7);
        let f = match wire {
            0 => Field::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Field::Fixed64
            }
            2 => {
                let n = usize::try_from(self.varint()?).map_err(|_| "length too large")?;
                Field::Bytes(self.take(n)?)
            }
            5 => Field::Fixed32(self.take(4)?),
            w => return Err(format!("unsupported protobuf wire type {w} (field {num})")),
        };
        Ok(Some((num, f)))
    }
}

enum Field<'a> {
    Varint(u64),
    Fixed64,
    Bytes(&'a [u8]),
    Fixed32(&'a [u8]),
}

/// The pieces of a `tokenizer.model`, in id order.
pub fn read_pieces(bytes: &[u8]) -> Result<Vec<Piece>, String> {
    let mut r = Reader { buf: bytes, pos: 0 };
    let mut pieces = Vec::new();
    while let Some((num, f)) = r.field()? {
        if num != 1 {
            continue;
        }
        let Field::Bytes(msg) = f else {
            return Err("field 1 (pieces) is not a message".into());
        };
        let mut p = Reader { buf: msg, pos: 0 };
        let mut piece = Piece {
            piece: String::new(),
            score: 0.0,
            kind: 1,
        };
        while let Some((n, f)) = p.field()? {
            match (n, f) {
                (1, Field::Bytes(s)) => {
                    piece.piece = String::from_utf8(s.to_vec())
                        .map_err(|_| format!("piece {} is not valid UTF-8", pieces.len()))?
                }
                (2, Field::Fixed32(b)) => {
                    piece.score = f32::from_le_bytes([b[0], b[1], b[2], b[3]])
                }
                (3, Field::Varint(v)) => piece.kind = v as i32,
                _ => {}
            }
        }
        pieces.push(piece);
    }
    if pieces.is_empty() {
        return Err("no pieces (not a SentencePiece model)".into());
    }
    Ok(pieces)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_key(out: &mut Vec<u8>, num: u64, wire: u64) {
    put_varint(out, (num << 3) | wire);
}

fn put_bytes(out: &mut Vec<u8>, num: u64, b: &[u8]) {
    put_key(out, num, 2);
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn put_int(out: &mut Vec<u8>, num: u64, v: i64) {
    put_key(out, num, 0);
    put_varint(out, v as u64);
}

/// What a written `tokenizer.model` says besides its pieces.
pub struct SpmSpec {
    pub unk_id: Option<u32>,
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    pub pad_id: Option<u32>,
    pub byte_fallback: bool,
    pub add_dummy_prefix: bool,
}

/// A BPE `ModelProto` holding `pieces`, readable by the `sentencepiece` library and by
/// [`read_pieces`].
pub fn write_model(pieces: &[Piece], spec: &SpmSpec) -> Vec<u8> {
    let mut out = Vec::new();
    for p in pieces {
        let mut m = Vec::new();
        put_bytes(&mut m, 1, p.piece.as_bytes());
        put_key(&mut m, 2, 5);
        m.extend_from_slice(&p.score.to_le_bytes());
        put_int(&mut m, 3, i64::from(p.kind));
        put_bytes(&mut out, 1, &m);
    }
    let id = |v: Option<u32>| v.map_or(-1, i64::from);
    let mut t = Vec::new();
    put_int(&mut t, 3, 2); // model_type = BPE
    put_int(&mut t, 4, pieces.len() as i64);
    put_int(&mut t, 35, i64::from(spec.byte_fallback));
    put_int(&mut t, 40, id(spec.unk_id));
    put_int(&mut t, 41, id(spec.bos_id));
    put_int(&mut t, 42, id(spec.eos_id));
    put_int(&mut t, 43, id(spec.pad_id));
    put_bytes(&mut out, 2, &t);
    let mut n = Vec::new();
    put_bytes(&mut n, 1, b"identity");
    put_int(&mut n, 3, i64::from(spec.add_dummy_prefix));
    put_int(&mut n, 4, 0); // remove_extra_whitespaces
    put_int(&mut n, 5, 1); // escape_whitespaces
    put_bytes(&mut out, 3, &n);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let pieces = vec![
            Piece {
                piece: "<unk>".into(),
                score: 0.0,
                kind: 2,
            },
            Piece {
                piece: "<s>".into(),
                score: 0.0,
                kind: 3,
            },
            Piece {
                piece: "▁the".into(),
                score: -3.5,
                kind: 1,
            },
            Piece {
                piece: "<0x0A>".into(),
                score: 0.0,
                kind: 6,
            },
        ];
        let spec = SpmSpec {
            unk_id: Some(0),
            bos_id: Some(1),
            eos_id: None,
            pad_id: None,
            byte_fallback: true,
            add_dummy_prefix: true,
        };
        let bytes = write_model(&pieces, &spec);
        assert_eq!(read_pieces(&bytes).unwrap(), pieces);
        assert!(read_pieces(&bytes[..5]).is_err());
        assert!(read_pieces(b"").is_err());
        assert!(read_pieces(&[0x0a, 0xff]).is_err());
    }
}
