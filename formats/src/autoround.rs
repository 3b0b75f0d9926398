//! Packed integer layouts of auto_round, GPTQ and AWQ checkpoints: packing (for our exports) and
//! unpacking (to load theirs), as the reference auto-round writes them.
//!
//! Codes are unsigned `0 … 2^b-1`; a weight is `scale · (code − zero)` with per-group `scale`
//! and `zero` (groups of `group_size` consecutive input columns).
//!
//! - **GPTQ** (`auto_round:auto_gptq`, plain `auto_round`, `auto_gptq`): `qweight` int32
//!   `[in·b/32, out]` packs consecutive *input* rows into a word, element k of a word in bits
//!   `[b·k, b·k+b)`; `qzeros` int32 `[groups, out·b/32]` packs consecutive *outputs* the same way;
//!   `scales` f16 `[groups, out]`. 3-bit words follow GPTQ's 32-values-in-3-words layout. The
//!   legacy GPTQ v1 convention (`auto_round:auto_gptq`, `auto_gptq`) stores `zero − 1`.
//! - **AWQ** (`auto_round:auto_awq`, `auto_awq`, 4-bit only): `qweight` int32 `[in, out/8]` packs
//!   eight consecutive *outputs*, output `8c + ORDER[k]` in nibble k with
//!   `ORDER = [0, 2, 4, 6, 1, 3, 5, 7]`; `qzeros` int32 `[groups, out/8]` the same (no −1);
//!   `scales` f16 `[groups, out]`.

/// AWQ's nibble order: nibble k of a word holds output `8c + AWQ_ORDER[k]`.
pub const AWQ_ORDER: [usize; 8] = [0, 2, 4, 6, 1, 3, 5, 7];

/// Errors unpacking a checkpoint's tensors.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PackError {
    #[error("{0} bits is not a packable width (2, 3, 4 or 8)")]
    Bits(u32),
    #[error("{what}: {got} elements, expected {want}")]
    Size {
        what: &'static str,
        got: usize,
        want: usize,
    },
    #[error("{what}: {n} is not a multiple of {m}")]
    Ragged {
        what: &'static str,
        n: usize,
        m: usize,
    },
}

fn check_bits(bits: u32) -> Result<(), PackError> {
    match bits {
        2 | 3 | 4 | 8 => Ok(()),
        b => Err(PackError::Bits(b)),
    }
}

/// `n` must be a multiple of `m` (`what` names the dimension in the error).
fn multiple_of(what: &'static str, n: usize, m: usize) -> Result<(), PackError> {
    if n % m == 0 {
        Ok(())
    } else {
        Err(PackError::Ragged { what, n, m })
    }
}

/// Pack a sequence of `b`-bit values (length a multiple of 32) into 32-bit words, GPTQ style:
/// values fill words from bit 0 upwards, straddling word boundaries for 3 bits.
fn pack_stream(vals: impl Iterator<Item = u32>, bits: u32, out: &mut Vec<u32>) {
    let mut acc: u64 = 0;
    let mut nbits = 0u32;
    let mask = (1u64 << bits) - 1;
    for v in vals {
        acc |= (u64::from(v) & mask) << nbits;
        nbits += bits;
        if nbits >= 32 {
            out.push(acc as u32);
            acc >>= 32;
            nbits -= 32;
        }
    }
    debug_assert_eq!(nbits, 0);
}

/// Unpack `n` values of `bits` from words packed by [`pack_stream`].
fn unpack_stream(words: impl Iterator<Item = u32>, bits: u32, n: usize, out: &mut Vec<u32>) {
    let mut acc: u64 = 0;
    let mut nbits = 0u32;
    let mask = (1u64 << bits) - 1;
    let mut words = words;
    for _ in 0..n {
        if nbits < bits {
            acc |= u64::from(words.next().unwrap_or(0)) << nbits;
            nbits += 32;
        }
        out.push((acc & mask) as u32);
        acc >>= bits;
        nbits -= bits;
    }
}

/// GPTQ `qweight` (`[cols·b/32, rows]`, row-major) from codes `rows × cols` (row = output).
pub fn pack_gptq_qweight(
    codes: &[u8],
    rows: usize,
    cols: usize,
    bits: u32,
) -> Result<Vec<u32>, PackError> {
    check_bits(bits)?;
    if codes.len() != rows * cols {
        return Err(PackError::Size {
            what: "codes",
            got: codes.len(),
            want: rows * cols,
        });
    }
    multiple_of("input features", cols, 32)?;
    let words_per_col = cols * bits as usize / 32;
    // Pack each output's column of codes, then transpose to [word, out].
    let mut per_out = Vec::with_capacity(rows * words_per_col);
    for r in 0..rows {
        pack_stream(
            codes[r * cols..(r + 1) * cols]
                .iter()
                .map(|&c| u32::from(c)),
            bits,
            &mut per_out,
        );
    }
    let mut out = vec![0u32; words_per_col * rows];
    for r in 0..rows {
        for w in 0..words_per_col {
            out[w * rows + r] = per_out[r * words_per_col + w];
        }
    }
    Ok(out)
}

/// Codes `rows × cols` from a GPTQ `qweight`.
pub fn unpack_gptq_qweight(
    q: &[u32],
    rows: usize,
    cols: usize,
    bits: u32,
) -> Result<Vec<u8>, PackError> {
    check_bits(bits)?;
    multiple_of("input features", cols, 32)?;
    let words_per_col = cols * bits as usize / 32;
    if q.len() != words_per_col * rows {
        return Err(PackError::Size {
            what: "qweight",
            got: q.len(),
            want: words_per_col * rows,
        });
    }
    let mut codes = Vec::with_capacity(rows * cols);
    let mut tmp = Vec::with_capacity(cols);
    for r in 0..rows {
        tmp.clear();
        unpack_stream(
            (0..words_per_col).map(|w| q[w * rows + r]),
            bits,
            cols,
            &mut tmp,
        );
        codes.extend(tmp.iter().map(|&v| v as u8));
    }
    Ok(codes)
}

/// GPTQ `qzeros` (`[groups, rows·b/32]`) from zero points `groups × rows`; `minus_one` stores
/// `zero − 1` (GPTQ v1), wrapping as the reference's int32 arithmetic does.
pub fn pack_gptq_qzeros(
    zeros: &[u32],
    groups: usize,
    rows: usize,
    bits: u32,
    minus_one: bool,
) -> Result<Vec<u32>, PackError> {
    check_bits(bits)?;
    multiple_of("output features", rows, 32)?;
    let mut out = Vec::with_capacity(groups * rows * bits as usize / 32);
    for g in 0..groups {
        let vals = zeros[g * rows..(g + 1) * rows].iter().map(|&z| {
            if minus_one {
                z.wrapping_sub(1)
            } else {
                z
            }
        });
        pack_stream(vals, bits, &mut out);
    }
    Ok(out)
}

/// Zero points `groups × rows` from a GPTQ `qzeros` (adding back the 1 when `minus_one`).
pub fn unpack_gptq_qzeros(
    q: &[u32],
    groups: usize,
    rows: usize,
    bits: u32,
    minus_one: bool,
) -> Result<Vec<u32>, PackError> {
    check_bits(bits)?;
    let wpr = rows * bits as usize / 32;
    if rows * bits as usize % 32 != 0 || q.len() != groups * wpr {
        return Err(PackError::Size {
            what: "qzeros",
            got: q.len(),
            want: groups * wpr,
        });
    }
    let mut out = Vec::with_capacity(groups * rows);
    for g in 0..groups {
        let start = out.len();
        unpack_stream(
            q[g * wpr..(g + 1) * wpr].iter().copied(),
            bits,
            rows,
            &mut out,
        );
        if minus_one {
            // readers add the 1 back without masking: a stored 2^b-1 means 2^b
            for z in &mut out[start..] {
                *z += 1;
            }
        }
    }
    Ok(out)
}

/// AWQ `qweight` (`[cols, rows/8]`) from 4-bit codes `rows × cols`.
pub fn pack_awq_qweight(codes: &[u8], rows: usize, cols: usize) -> Result<Vec<u32>, PackError> {
    multiple_of("output features", rows, 8)?;
    let wpr = rows / 8;
    let mut out = vec![0u32; cols * wpr];
    for i in 0..cols {
        for c in 0..wpr {
            let mut w = 0u32;
            for (k, &o) in AWQ_ORDER.iter().enumerate() {
                w |= (u32::from(codes[(8 * c + o) * cols + i]) & 15) << (4 * k);
            }
            out[i * wpr + c] = w;
        }
    }
    Ok(out)
}

/// AWQ `qzeros` (`[groups, rows/8]`) from zero points `groups × rows`.
pub fn pack_awq_qzeros(zeros: &[u32], groups: usize, rows: usize) -> Result<Vec<u32>, PackError> {
    let wpr = rows / 8;
    let mut out = vec![0u32; groups * wpr];
    for g in 0..groups {
        for c in 0..wpr {
            let mut w = 0u32;
            for (k, &o) in AWQ_ORDER.iter().enumerate() {
                w |= (zeros[g * rows + 8 * c + o] & 15) << (4 * k);
            }
            out[g * wpr + c] = w;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(rows: usize, cols: usize, bits: u32) -> Vec<u8> {
        (0..rows * cols)
            .map(|i| ((i * 7 + i / 5) % (1 << bits)) as u8)
            .collect()
    }

    #[test]
    fn gptq_4bit_layout_by_hand() {
        // one output, 32 inputs: word w holds inputs 8w..8w+8, input 8w+k in bits 4k..4k+4
        let c: Vec<u8> = (0..32).map(|i| (i % 16) as u8).collect();
        let q = pack_gptq_qweight(&c, 1, 32, 4).unwrap();
        assert_eq!(q, vec![0x7654_3210, 0xFEDC_BA98, 0x7654_3210, 0xFEDC_BA98]);
        // two outputs: [word, out] order
        let mut c2 = c.clone();
        c2.extend(std::iter::repeat(1u8).take(32));
        let q = pack_gptq_qweight(&c2, 2, 32, 4).unwrap();
        assert_eq!(q[0], 0x7654_3210);
        assert_eq!(q[1], 0x1111_1111);
        assert_eq!(q[2], 0xFEDC_BA98);
    }

    #[test]
    fn gptq_3bit_layout_by_hand() {
        // values 0..31 (mod 8): the GPTQ 3-bit word layout
        let c: Vec<u8> = (0..32).map(|i| (i % 8) as u8).collect();
        let q = pack_gptq_qweight(&c, 1, 32, 3).unwrap();
        let mut w0 = 0u32;
        for i in 0..10 {
            w0 |= (c[i] as u32) << (3 * i);
        }
        w0 |= ((c[10] as u32) & 3) << 30;
        let mut w1 = (c[10] as u32) >> 2;
        for i in 0..10 {
            w1 |= (c[11 + i] as u32) << (3 * i + 1);
        }
        w1 |= ((c[21] as u32) & 1) << 31;
        let mut w2 = (c[21] as u32) >> 1;
        for i in 0..10 {
            w2 |= (c[22 + i] as u32) << (3 * i + 2);
        }
        assert_eq!(q, vec![w0, w1, w2]);
    }

    #[test]
    fn gptq_round_trips() {
        for bits in [2, 3, 4, 8] {
            let (rows, cols) = (64, 96);
            let c = codes(rows, cols, bits);
            let q = pack_gptq_qweight(&c, rows, cols, bits).unwrap();
            assert_eq!(q.len(), cols * bits as usize / 32 * rows);
            assert_eq!(unpack_gptq_qweight(&q, rows, cols, bits).unwrap(), c);
            let z: Vec<u32> = (0..3 * rows)
                .map(|i| (i as u32 * 5 + 1) % (1 << bits))
                .collect();
            for m1 in [false, true] {
                let qz = pack_gptq_qzeros(&z, 3, rows, bits, m1).unwrap();
                let back = unpack_gptq_qzeros(&qz, 3, rows, bits, m1).unwrap();
                let mask = (1u32 << bits) - 1;
                for (a, b) in back.iter().zip(&z) {
                    assert_eq!(a & mask, *b, "bits {bits} minus_one {m1}");
                }
            }
        }
    }

    #[test]
    fn sym_int4_qzeros_are_sevens() {
        let z = vec![8u32; 2 * 32];
        let q = pack_gptq_qzeros(&z, 2, 32, 4, true).unwrap();
        assert!(q.iter().all(|&w| w == 0x7777_7777));
        let z = vec![2u32; 32];
        assert!(pack_gptq_qzeros(&z, 1, 32, 2, true)
            .unwrap()
            .iter()
            .all(|&w| w == 0x5555_5555));
    }

    #[test]
    fn awq_order() {
        // 8 outputs, 1 input: output o has code o
        let c: Vec<u8> = (0..8).collect();
        let q = pack_awq_qweight(&c, 8, 1).unwrap();
        // nibble k holds output ORDER[k]: 0,2,4,6,1,3,5,7
        assert_eq!(q, vec![0x7531_6420]);
    }
}
