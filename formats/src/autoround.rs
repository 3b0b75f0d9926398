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

/// AWQ codes `rows × cols` from a `qweight` `[cols, rows/8]` (the inverse of [`pack_awq_qweight`]).
pub fn unpack_awq_qweight(q: &[u32], rows: usize, cols: usize) -> Result<Vec<u8>, PackError> {
    multiple_of("output features", rows, 8)?;
    let wpr = rows / 8;
    if q.len() != cols * wpr {
        return Err(PackError::Size {
            what: "qweight",
            got: q.len(),
            want: cols * wpr,
        });
    }
    let mut codes = vec![0u8; rows * cols];
    for i in 0..cols {
        for c in 0..wpr {
            let w = q[i * wpr + c];
            for (k, &o) in AWQ_ORDER.iter().enumerate() {
                codes[(8 * c + o) * cols + i] = ((w >> (4 * k)) & 15) as u8;
            }
        }
    }
    Ok(codes)
}

/// AWQ zero points `groups × rows` from a `qzeros` `[groups, rows/8]`.
pub fn unpack_awq_qzeros(q: &[u32], groups: usize, rows: usize) -> Result<Vec<u32>, PackError> {
    multiple_of("output features", rows, 8)?;
    let wpr = rows / 8;
    if q.len() != groups * wpr {
        return Err(PackError::Size {
            what: "qzeros",
            got: q.len(),
            want: groups * wpr,
        });
    }
    let mut out = vec![0u32; groups * rows];
    for g in 0..groups {
        for c in 0..wpr {
            let w = q[g * wpr + c];
            for (k, &o) in AWQ_ORDER.iter().enumerate() {
                out[g * rows + 8 * c + o] = (w >> (4 * k)) & 15;
            }
        }
    }
    Ok(out)
}

/// How a checkpoint's packed layers are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// GPTQ words; `minus_one`: zero points stored minus one (GPTQ v1, `auto_round:auto_gptq`).
    Gptq { minus_one: bool },
    /// AWQ words (4-bit).
    Awq,
}

/// One layer's quantization, as a checkpoint's `quantization_config` describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerQuant {
    pub bits: u32,
    /// Input columns per group; 0 (the config's −1) is one group per row.
    pub group_size: usize,
    pub sym: bool,
    pub layout: Layout,
}

/// A checkpoint's `quantization_config` (auto_round, GPTQ or AWQ): the global scheme and the
/// per-layer exceptions of `extra_config`, `dynamic` and `modules_to_not_convert` (`None`: kept
/// in float).
#[derive(Clone, Debug)]
pub struct QuantConfig {
    pub method: String,
    pub default: LayerQuant,
    pub per_layer: std::collections::HashMap<String, Option<LayerQuant>>,
    /// AWQ's `modules_to_not_convert` (float where the entry occurs in the name), then
    /// GPTQModel's `dynamic` rules (`+:regex` with overrides, `-:regex` left in float) in their
    /// order, matched at the start of the module name; the first match wins.
    pub patterns: Vec<(regex::Regex, Option<LayerQuant>)>,
}

impl QuantConfig {
    /// Read `config.json`'s `quantization_config`; `Ok(None)` when there is none. An unknown
    /// method or packing is an error that names it.
    pub fn from_config(config: &serde_json::Value) -> Result<Option<QuantConfig>, String> {
        let Some(qc) = config.get("quantization_config") else {
            return Ok(None);
        };
        let method = qc["quant_method"].as_str().unwrap_or("").to_string();
        let layout = match method.as_str() {
            "auto-round" | "intel/auto-round" | "auto_round" => {
                match qc["packing_format"].as_str().unwrap_or("auto_round:auto_gptq") {
                    "auto_round:auto_gptq" | "auto_round:gptq" | "auto_gptq" => {
                        Layout::Gptq { minus_one: true }
                    }
                    "auto_round" | "auto_round:gptqmodel" => Layout::Gptq { minus_one: false },
                    "auto_round:auto_awq" | "auto_round:awq" | "auto_awq" => Layout::Awq,
                    other => {
                        return Err(format!(
                            "quantization_config.packing_format '{other}' is not supported (auto_round:auto_gptq, auto_round, auto_round:auto_awq are)"
                        ))
                    }
                }
            }
            "gptq" => Layout::Gptq {
                minus_one: qc["checkpoint_format"].as_str() != Some("gptq_v2"),
            },
            "awq" => Layout::Awq,
            other => {
                return Err(format!(
                    "quantization_config.quant_method '{other}' is not supported (auto-round, gptq and awq are)"
                ))
            }
        };
        if let Some(dt) = qc["data_type"].as_str() {
            if dt != "int" {
                return Err(format!(
                    "quantization_config.data_type '{dt}' is not supported (int is)"
                ));
            }
        }
        let bits = qc
            .get("bits")
            .or_else(|| qc.get("w_bit"))
            .and_then(|v| v.as_u64())
            .ok_or("quantization_config has no bits")? as u32;
        let gs = qc
            .get("group_size")
            .or_else(|| qc.get("q_group_size"))
            .and_then(|v| v.as_i64())
            .unwrap_or(128);
        let sym = match qc.get("sym") {
            Some(v) => v.as_bool().unwrap_or(true),
            // AWQ's zero_point: true means asymmetric
            None => !qc["zero_point"].as_bool().unwrap_or(false),
        };
        let group = |g: i64| if g < 0 { 0 } else { g as usize };
        let default = LayerQuant {
            bits,
            group_size: group(gs),
            sym,
            layout,
        };
        let mut per_layer = std::collections::HashMap::new();
        if let Some(extra) = qc["extra_config"].as_object() {
            for (name, v) in extra {
                let b = v["bits"].as_u64().map_or(bits, |b| b as u32);
                let float = b >= 16
                    || matches!(
                        v["data_type"].as_str(),
                        Some("fp" | "float" | "bfloat16" | "float16")
                    );
                per_layer.insert(
                    name.clone(),
                    (!float).then(|| LayerQuant {
                        bits: b,
                        group_size: v["group_size"].as_i64().map_or(default.group_size, group),
                        sym: v["sym"].as_bool().unwrap_or(sym),
                        layout,
                    }),
                );
            }
        }
        let mut patterns = Vec::new();
        // AWQ: modules kept in float, matched as transformers does (the entry is a part of the
        // module's name)
        if let Some(skip) = qc["modules_to_not_convert"].as_array() {
            for m in skip.iter().filter_map(|v| v.as_str()) {
                patterns.push((
                    regex::Regex::new(&format!(".*{}", regex::escape(m))).expect("escaped"),
                    None,
                ));
            }
        }
        if let Some(dynamic) = qc["dynamic"].as_object() {
            for (key, v) in dynamic {
                let (quant, re) = match key.split_at_checked(2) {
                    Some(("+:", re)) => (true, re),
                    Some(("-:", re)) => (false, re),
                    _ => (true, key.as_str()),
                };
                let rx = regex::Regex::new(&format!("^(?:{re})")).map_err(|e| {
                    format!("quantization_config.dynamic: '{key}' is not a regular expression: {e}")
                })?;
                let lq = quant.then(|| LayerQuant {
                    bits: v["bits"].as_u64().map_or(bits, |b| b as u32),
                    group_size: v["group_size"].as_i64().map_or(default.group_size, group),
                    sym: v["sym"].as_bool().unwrap_or(sym),
                    layout,
                });
                patterns.push((rx, lq));
            }
        }
        Ok(Some(QuantConfig {
            method,
            default,
            per_layer,
            patterns,
        }))
    }

    /// The quantization of module `name` (`model.layers.0.self_attn.q_proj`); `None`: float.
    pub fn layer(&self, name: &str) -> Option<LayerQuant> {
        if let Some(q) = self.per_layer.get(name) {
            return *q;
        }
        if let Some((_, q)) = self.patterns.iter().find(|(re, _)| re.is_match(name)) {
            return *q;
        }
        Some(self.default)
    }
}

/// A packed layer's contents, unpacked: codes `rows × cols` (output × input), zero points and
/// scales `groups × rows`, the group size, and the group of each input where GPTQ's act-order
/// `g_idx` is not the plain `input / group_size`.
#[derive(Debug, Clone)]
pub struct Unpacked {
    pub codes: Vec<u8>,
    pub zeros: Vec<u32>,
    pub scales: Vec<f32>,
    pub groups: usize,
    pub group_size: usize,
    pub g_idx: Option<Vec<i32>>,
}

/// Unpack a layer: `qweight` as stored (`qweight_rows` rows: GPTQ pads the input to whole
/// groups), `qzeros` and `scales` (`groups × rows`, as f32) and, for GPTQ with act-order,
/// `g_idx` (group of each input).
#[allow(clippy::too_many_arguments)]
pub fn unpack_packed(
    q: &LayerQuant,
    rows: usize,
    cols: usize,
    qweight: &[u32],
    qweight_rows: usize,
    qzeros: &[u32],
    scales: &[f32],
    g_idx: Option<&[i32]>,
) -> Result<Unpacked, PackError> {
    let gs = if q.group_size == 0 {
        cols
    } else {
        q.group_size
    };
    let codes = match q.layout {
        Layout::Gptq { .. } => {
            check_bits(q.bits)?;
            let padded = qweight_rows * 32 / q.bits as usize;
            if padded < cols {
                return Err(PackError::Size {
                    what: "qweight rows",
                    got: qweight_rows,
                    want: cols * q.bits as usize / 32,
                });
            }
            let c = unpack_gptq_qweight(qweight, rows, padded, q.bits)?;
            if padded == cols {
                c
            } else {
                c.chunks_exact(padded)
                    .flat_map(|r| r[..cols].iter().copied())
                    .collect()
            }
        }
        Layout::Awq => {
            if q.bits != 4 {
                return Err(PackError::Bits(q.bits));
            }
            unpack_awq_qweight(qweight, rows, cols)?
        }
    };
    let groups = scales.len() / rows.max(1);
    if scales.len() != groups * rows || groups < cols.div_ceil(gs) {
        return Err(PackError::Size {
            what: "scales",
            got: scales.len(),
            want: cols.div_ceil(gs) * rows,
        });
    }
    let zeros = match q.layout {
        Layout::Gptq { minus_one } => unpack_gptq_qzeros(qzeros, groups, rows, q.bits, minus_one)?,
        Layout::Awq => unpack_awq_qzeros(qzeros, groups, rows)?,
    };
    let g_idx = match g_idx {
        Some(g) => {
            if g.len() < cols || g[..cols].iter().any(|&x| x < 0 || x as usize >= groups) {
                return Err(PackError::Size {
                    what: "g_idx",
                    got: g.len(),
                    want: cols,
                });
            }
            let plain = g[..cols]
                .iter()
                .enumerate()
                .all(|(c, &x)| x as usize == c / gs);
            (!plain).then(|| g[..cols].to_vec())
        }
        None => None,
    };
    Ok(Unpacked {
        codes,
        zeros,
        scales: scales.to_vec(),
        groups,
        group_size: gs,
        g_idx,
    })
}

impl Unpacked {
    /// `scale · (code − zero)`, `rows × cols` (the shape it was unpacked with).
    pub fn dequantize(&self, rows: usize, cols: usize) -> Vec<f32> {
        let mut w = vec![0f32; rows * cols];
        for r in 0..rows {
            for c in 0..cols {
                let gi = match &self.g_idx {
                    Some(g) => g[c] as usize,
                    None => c / self.group_size,
                };
                let z = self.zeros[gi * rows + r] as f32;
                w[r * cols + c] =
                    self.scales[gi * rows + r] * (self.codes[r * cols + c] as f32 - z);
            }
        }
        w
    }
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

    /// Packing then [`unpack_packed`] and [`Unpacked::dequantize`] give `scale · (code − zero)` for every layout, with a
    /// partial last group and GPTQ's input padded to whole groups.
    #[test]
    fn packed_layers_dequantize_to_scale_times_code_minus_zero() {
        let (rows, cols, gs) = (32, 96, 64); // two groups, the second half full
        let groups = 2;
        for (layout, bits) in [
            (Layout::Gptq { minus_one: true }, 4),
            (Layout::Gptq { minus_one: false }, 2),
            (Layout::Gptq { minus_one: false }, 3),
            (Layout::Gptq { minus_one: true }, 8),
            (Layout::Awq, 4),
        ] {
            let c = codes(rows, cols, bits);
            let zeros: Vec<u32> = (0..groups * rows)
                .map(|i| 1 + (i as u32 * 3) % ((1 << bits) - 1))
                .collect();
            let scales: Vec<f32> = (0..groups * rows)
                .map(|i| 0.01 * (i as f32 + 1.0))
                .collect();
            let (qw, qrows, qz) = match layout {
                Layout::Gptq { minus_one } => {
                    // pad the input to 128 columns with zero codes, as the reference does
                    let mut padded = vec![0u8; rows * 128];
                    for r in 0..rows {
                        padded[r * 128..r * 128 + cols]
                            .copy_from_slice(&c[r * cols..(r + 1) * cols]);
                    }
                    (
                        pack_gptq_qweight(&padded, rows, 128, bits).unwrap(),
                        128 * bits as usize / 32,
                        pack_gptq_qzeros(&zeros, groups, rows, bits, minus_one).unwrap(),
                    )
                }
                Layout::Awq => (
                    pack_awq_qweight(&c, rows, cols).unwrap(),
                    cols,
                    pack_awq_qzeros(&zeros, groups, rows).unwrap(),
                ),
            };
            let q = LayerQuant {
                bits,
                group_size: gs,
                sym: false,
                layout,
            };
            let w = unpack_packed(&q, rows, cols, &qw, qrows, &qz, &scales, None)
                .unwrap()
                .dequantize(rows, cols);
            for r in 0..rows {
                for col in 0..cols {
                    let g = col / gs;
                    let want = scales[g * rows + r]
                        * (c[r * cols + col] as f32 - zeros[g * rows + r] as f32);
                    assert_eq!(
                        w[r * cols + col],
                        want,
                        "{layout:?} {bits}-bit [{r}, {col}]"
                    );
                }
            }
        }
    }

    #[test]
    fn quantization_configs_are_read() {
        let v: serde_json::Value = serde_json::json!({"quantization_config": {
            "quant_method": "auto-round", "packing_format": "auto_round:auto_awq", "bits": 4,
            "group_size": -1, "sym": false, "data_type": "int",
            "extra_config": {"model.layers.0.mlp.down_proj": {"bits": 8, "group_size": 32},
                             "model.layers.0.self_attn.k_proj": {"bits": 16, "data_type": "fp"}}}});
        let q = QuantConfig::from_config(&v).unwrap().unwrap();
        assert_eq!(
            q.default,
            LayerQuant {
                bits: 4,
                group_size: 0,
                sym: false,
                layout: Layout::Awq
            }
        );
        assert_eq!(q.layer("model.layers.0.mlp.down_proj").unwrap().bits, 8);
        assert_eq!(
            q.layer("model.layers.0.mlp.down_proj").unwrap().group_size,
            32
        );
        assert_eq!(q.layer("model.layers.0.self_attn.k_proj"), None);
        assert_eq!(q.layer("model.layers.1.mlp.up_proj").unwrap().bits, 4);
        let g = serde_json::json!({"quantization_config": {"quant_method": "gptq", "bits": 3,
            "group_size": 128, "sym": true, "checkpoint_format": "gptq_v2"}});
        assert_eq!(
            QuantConfig::from_config(&g)
                .unwrap()
                .unwrap()
                .default
                .layout,
            Layout::Gptq { minus_one: false }
        );
        assert!(QuantConfig::from_config(&serde_json::json!({}))
            .unwrap()
            .is_none());
        // GPTQModel's dynamic rules: first match wins, "-:" keeps a layer in float
        let d = serde_json::json!({"quantization_config": {"quant_method": "gptq", "bits": 4,
            "group_size": 128, "sym": true, "dynamic": {
                r"+:^model\.layers\.1\.mlp\.down_proj$": {"bits": 8, "group_size": 32},
                r"-:^model\.layers\.\d+\.self_attn\.k_proj$": {}}}});
        let q = QuantConfig::from_config(&d).unwrap().unwrap();
        let down = q.layer("model.layers.1.mlp.down_proj").unwrap();
        assert_eq!((down.bits, down.group_size, down.sym), (8, 32, true));
        assert_eq!(q.layer("model.layers.11.mlp.down_proj").unwrap().bits, 4);
        assert_eq!(q.layer("model.layers.7.self_attn.k_proj"), None);
        let bad = serde_json::json!({"quantization_config": {"quant_method": "gptq", "bits": 4,
            "dynamic": {"-:(": {}}}});
        assert!(QuantConfig::from_config(&bad)
            .unwrap_err()
            .contains("'-:('"));
        // AWQ's modules_to_not_convert: name parts, as transformers matches them
        let a = serde_json::json!({"quantization_config": {"quant_method": "awq", "bits": 4,
            "group_size": 128, "zero_point": true, "version": "gemm",
            "modules_to_not_convert": ["self_attn.k_proj"]}});
        let q = QuantConfig::from_config(&a).unwrap().unwrap();
        assert_eq!(q.layer("model.layers.3.self_attn.k_proj"), None);
        assert!(!q.layer("model.layers.3.self_attn.q_proj").unwrap().sym);
        let bad = serde_json::json!({"quantization_config": {"quant_method": "bitsandbytes"}});
        assert!(QuantConfig::from_config(&bad)
            .unwrap_err()
            .contains("bitsandbytes"));
        let fp = serde_json::json!({"quantization_config": {"quant_method": "auto-round",
            "bits": 4, "data_type": "nv_fp"}});
        assert!(QuantConfig::from_config(&fp).unwrap_err().contains("nv_fp"));
    }
}
