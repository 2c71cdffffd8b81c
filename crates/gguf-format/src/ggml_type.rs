//! The ggml tensor types: ids, names, block sizes and byte sizes.
//!
//! The table mirrors ggml's `ggml_type` enum and gguf-py's `GGML_QUANT_SIZES` (PyPI `gguf`
//! 0.19): `(elements per block, bytes per block)`. Ids that ggml never assigned, or retired
//! (4, 5: Q4_2/Q4_3; 31–33: the Q4_0_4_4 family), are [`GgmlType::Unknown`]: a file may list
//! them, and only asking for their bytes is an error.

use std::fmt;

macro_rules! ggml_types {
    ($( $variant:ident = $id:literal, $name:literal, $blck:literal, $bytes:literal; )*) => {
        /// A ggml tensor element type, as stored in a GGUF tensor info (`u32` type id).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[allow(non_camel_case_types)]
        pub enum GgmlType {
            $(
                #[doc = concat!("`", $name, "` (type id ", stringify!($id), ")")]
                $variant,
            )*
            /// A type id this table does not know; kept so the file can still be listed.
            Unknown(u32),
        }

        impl GgmlType {
            /// Every known type, in id order.
            pub const ALL: &'static [GgmlType] = &[$(GgmlType::$variant),*];

            /// The type for a raw ggml type id (never fails: unknown ids become [`GgmlType::Unknown`]).
            pub fn from_id(id: u32) -> Self {
                match id {
                    $($id => GgmlType::$variant,)*
                    other => GgmlType::Unknown(other),
                }
            }

            /// The raw ggml type id.
            pub fn id(self) -> u32 {
                match self {
                    $(GgmlType::$variant => $id,)*
                    GgmlType::Unknown(id) => id,
                }
            }

            /// ggml's name for the type (`"Q8_0"`, `"MXFP4"`, ...); `None` for unknown ids.
            pub fn name(self) -> Option<&'static str> {
                match self {
                    $(GgmlType::$variant => Some($name),)*
                    GgmlType::Unknown(_) => None,
                }
            }

            /// The type with ggml's name `name` (exact, upper case as ggml spells it).
            pub fn from_name(name: &str) -> Option<Self> {
                match name {
                    $($name => Some(GgmlType::$variant),)*
                    _ => None,
                }
            }

            /// `(elements per block, bytes per block)`; `None` for unknown ids.
            pub fn block_layout(self) -> Option<(u64, u64)> {
                match self {
                    $(GgmlType::$variant => Some(($blck, $bytes)),)*
                    GgmlType::Unknown(_) => None,
                }
            }
        }
    };
}

ggml_types! {
    F32 = 0, "F32", 1, 4;
    F16 = 1, "F16", 1, 2;
    Q4_0 = 2, "Q4_0", 32, 18;
    Q4_1 = 3, "Q4_1", 32, 20;
    Q5_0 = 6, "Q5_0", 32, 22;
    Q5_1 = 7, "Q5_1", 32, 24;
    Q8_0 = 8, "Q8_0", 32, 34;
    Q8_1 = 9, "Q8_1", 32, 40;
    Q2_K = 10, "Q2_K", 256, 84;
    Q3_K = 11, "Q3_K", 256, 110;
    Q4_K = 12, "Q4_K", 256, 144;
    Q5_K = 13, "Q5_K", 256, 176;
    Q6_K = 14, "Q6_K", 256, 210;
    Q8_K = 15, "Q8_K", 256, 292;
    IQ2_XXS = 16, "IQ2_XXS", 256, 66;
    IQ2_XS = 17, "IQ2_XS", 256, 74;
    IQ3_XXS = 18, "IQ3_XXS", 256, 98;
    IQ1_S = 19, "IQ1_S", 256, 50;
    IQ4_NL = 20, "IQ4_NL", 32, 18;
    IQ3_S = 21, "IQ3_S", 256, 110;
    IQ2_S = 22, "IQ2_S", 256, 82;
    IQ4_XS = 23, "IQ4_XS", 256, 136;
    I8 = 24, "I8", 1, 1;
    I16 = 25, "I16", 1, 2;
    I32 = 26, "I32", 1, 4;
    I64 = 27, "I64", 1, 8;
    F64 = 28, "F64", 1, 8;
    IQ1_M = 29, "IQ1_M", 256, 56;
    BF16 = 30, "BF16", 1, 2;
    TQ1_0 = 34, "TQ1_0", 256, 54;
    TQ2_0 = 35, "TQ2_0", 256, 66;
    MXFP4 = 39, "MXFP4", 32, 17;
    NVFP4 = 40, "NVFP4", 64, 36;
    Q1_0 = 41, "Q1_0", 128, 18;
}

impl GgmlType {
    /// Elements per block; `None` for unknown ids.
    pub fn block_size(self) -> Option<u64> {
        self.block_layout().map(|(b, _)| b)
    }

    /// Bytes per block; `None` for unknown ids.
    pub fn type_size(self) -> Option<u64> {
        self.block_layout().map(|(_, t)| t)
    }

    /// Bytes taken by `n_elements` elements of this type.
    ///
    /// `None` when the type is unknown, `n_elements` is not a whole number of blocks, or the
    /// size overflows `u64`.
    pub fn bytes_for(self, n_elements: u64) -> Option<u64> {
        let (blck, size) = self.block_layout()?;
        if !n_elements.is_multiple_of(blck) {
            return None;
        }
        (n_elements / blck).checked_mul(size)
    }

    /// Whether the type is a block-quantized type (block size > 1).
    pub fn is_quantized(self) -> bool {
        matches!(self.block_size(), Some(b) if b > 1)
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "UNKNOWN({})", self.id()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_names_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for &t in GgmlType::ALL {
            assert_eq!(GgmlType::from_id(t.id()), t);
            assert_eq!(GgmlType::from_name(t.name().unwrap()), Some(t));
            assert!(seen.insert(t.id()));
        }
        assert_eq!(GgmlType::from_id(39), GgmlType::MXFP4);
        assert_eq!(GgmlType::from_id(4), GgmlType::Unknown(4));
        assert_eq!(GgmlType::Unknown(4).to_string(), "UNKNOWN(4)");
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(GgmlType::MXFP4.bytes_for(2880), Some(90 * 17));
        assert_eq!(GgmlType::Q8_0.bytes_for(2880), Some(90 * 34));
        assert_eq!(GgmlType::Q4_K.bytes_for(2880), None);
        assert_eq!(GgmlType::F32.bytes_for(u64::MAX), None);
        assert_eq!(GgmlType::Unknown(99).bytes_for(32), None);
    }
}
