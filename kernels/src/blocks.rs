//! The ggml tensor types: ids as stored in GGUF, block sizes and bytes per block.
//!
//! Ids and sizes follow ggml's `ggml.h` / `ggml-common.h` (the numbers are the file format, so they
//! must match exactly). Types ggml removed (ids 4, 5, 31-33, 36-38) are rejected on read.

use std::fmt;

/// Elements per super-block of the K-quants and IQ types.
pub const QK_K: usize = 256;

macro_rules! ggml_types {
    ($( $variant:ident = $id:literal, $name:literal, $blck:expr, $size:expr; )*) => {
        /// A ggml tensor element type.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[allow(non_camel_case_types)]
        pub enum GgmlType { $( $variant, )* }

        impl GgmlType {
            /// Every type, in id order.
            pub const ALL: &'static [GgmlType] = &[ $( GgmlType::$variant, )* ];

            /// The id stored in GGUF tensor infos.
            pub const fn id(self) -> u32 { match self { $( GgmlType::$variant => $id, )* } }

            /// The type for a GGUF id, or `None` for unknown or removed ids.
            pub const fn from_id(id: u32) -> Option<GgmlType> {
                match id { $( $id => Some(GgmlType::$variant), )* _ => None }
            }

            /// ggml's name (`"q4_K"`, `"f16"`, ...), as gguf-dump and llama.cpp print it.
            pub const fn name(self) -> &'static str { match self { $( GgmlType::$variant => $name, )* } }

            /// Elements per block.
            pub const fn block_size(self) -> usize { match self { $( GgmlType::$variant => $blck, )* } }

            /// Bytes per block.
            pub const fn type_size(self) -> usize { match self { $( GgmlType::$variant => $size, )* } }
        }
    };
}

ggml_types! {
    F32 = 0, "f32", 1, 4;
    F16 = 1, "f16", 1, 2;
    Q4_0 = 2, "q4_0", 32, 2 + 16;
    Q4_1 = 3, "q4_1", 32, 2 + 2 + 16;
    Q5_0 = 6, "q5_0", 32, 2 + 4 + 16;
    Q5_1 = 7, "q5_1", 32, 2 + 2 + 4 + 16;
    Q8_0 = 8, "q8_0", 32, 2 + 32;
    Q8_1 = 9, "q8_1", 32, 2 + 2 + 32;
    Q2_K = 10, "q2_K", QK_K, QK_K / 16 + QK_K / 4 + 2 + 2;
    Q3_K = 11, "q3_K", QK_K, QK_K / 8 + QK_K / 4 + 12 + 2;
    Q4_K = 12, "q4_K", QK_K, 2 + 2 + 12 + QK_K / 2;
    Q5_K = 13, "q5_K", QK_K, 2 + 2 + 12 + QK_K / 8 + QK_K / 2;
    Q6_K = 14, "q6_K", QK_K, QK_K / 2 + QK_K / 4 + QK_K / 16 + 2;
    Q8_K = 15, "q8_K", QK_K, 4 + QK_K + QK_K / 16 * 2;
    IQ2_XXS = 16, "iq2_xxs", QK_K, 2 + QK_K / 8 * 2;
    IQ2_XS = 17, "iq2_xs", QK_K, 2 + QK_K / 8 * 2 + QK_K / 32;
    IQ3_XXS = 18, "iq3_xxs", QK_K, 2 + 3 * QK_K / 8;
    IQ1_S = 19, "iq1_s", QK_K, 2 + QK_K / 8 + QK_K / 16;
    IQ4_NL = 20, "iq4_nl", 32, 2 + 16;
    IQ3_S = 21, "iq3_s", QK_K, 2 + QK_K / 4 + QK_K / 32 + QK_K / 8 + QK_K / 64;
    IQ2_S = 22, "iq2_s", QK_K, 2 + QK_K / 4 + QK_K / 32 + QK_K / 32;
    IQ4_XS = 23, "iq4_xs", QK_K, 2 + 2 + QK_K / 64 + QK_K / 2;
    I8 = 24, "i8", 1, 1;
    I16 = 25, "i16", 1, 2;
    I32 = 26, "i32", 1, 4;
    I64 = 27, "i64", 1, 8;
    F64 = 28, "f64", 1, 8;
    IQ1_M = 29, "iq1_m", QK_K, QK_K / 8 + QK_K / 16 + QK_K / 32;
    BF16 = 30, "bf16", 1, 2;
    TQ1_0 = 34, "tq1_0", QK_K, (QK_K - 4 * QK_K / 64) / 5 + QK_K / 64 + 2;
    TQ2_0 = 35, "tq2_0", QK_K, QK_K / 4 + 2;
    MXFP4 = 39, "mxfp4", 32, 1 + 16;
}

impl GgmlType {
    /// Bytes taken by `n` elements, or `None` if `n` is not a multiple of the block size or the
    /// size overflows.
    pub fn row_bytes(self, n: u64) -> Option<u64> {
        let b = self.block_size() as u64;
        if n % b != 0 {
            return None;
        }
        (n / b).checked_mul(self.type_size() as u64)
    }

    /// Whether the type is a block-quantized type (as opposed to a plain scalar type).
    pub const fn is_quantized(self) -> bool {
        self.block_size() > 1
    }

    /// Parse ggml's name, case-insensitively (`q4_k`, `Q4_K`, `f16`).
    pub fn from_name(s: &str) -> Option<GgmlType> {
        GgmlType::ALL
            .iter()
            .copied()
            .find(|t| t.name().eq_ignore_ascii_case(s))
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name().to_ascii_uppercase())
    }
}

// Block sizes fixed by the file format (ggml-common.h static_asserts).
const _: () = assert!(GgmlType::Q2_K.type_size() == 84);
const _: () = assert!(GgmlType::Q3_K.type_size() == 110);
const _: () = assert!(GgmlType::Q4_K.type_size() == 144);
const _: () = assert!(GgmlType::Q5_K.type_size() == 176);
const _: () = assert!(GgmlType::Q6_K.type_size() == 210);
const _: () = assert!(GgmlType::Q8_K.type_size() == 292);
const _: () = assert!(GgmlType::IQ1_S.type_size() == 50);
const _: () = assert!(GgmlType::IQ1_M.type_size() == 56);
const _: () = assert!(GgmlType::IQ3_S.type_size() == 110);
const _: () = assert!(GgmlType::IQ2_S.type_size() == 82);
const _: () = assert!(GgmlType::IQ4_XS.type_size() == 136);
const _: () = assert!(GgmlType::TQ1_0.type_size() == 54);
const _: () = assert!(GgmlType::TQ2_0.type_size() == 66);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_removed_ids_are_rejected() {
        for &t in GgmlType::ALL {
            assert_eq!(GgmlType::from_id(t.id()), Some(t));
            assert_eq!(GgmlType::from_name(t.name()), Some(t));
        }
        for removed in [4, 5, 31, 32, 33, 36, 37, 38, 1000] {
            assert_eq!(GgmlType::from_id(removed), None);
        }
    }

    #[test]
    fn row_bytes_checks_blocks_and_overflow() {
        assert_eq!(GgmlType::Q4_0.row_bytes(64), Some(36));
        assert_eq!(GgmlType::Q4_0.row_bytes(33), None);
        assert_eq!(GgmlType::Q8_K.row_bytes(u64::MAX - u64::MAX % 256), None);
    }
}
