//! IEEE 754 half (binary16) and bfloat16 conversions, bit-exact, round to nearest even.
//!
//! ggml stores weights as binary16; CTranslate2 stores them as binary16, bfloat16 or f32.

/// Converts binary16 bits to `f32` (exact: every binary16 value is representable).
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h & 0x8000) << 16;
    let exp = u32::from((h >> 10) & 0x1f);
    let man = u32::from(h & 0x3ff);
    let bits = match exp {
        0 if man == 0 => sign,
        0 => {
            // Subnormal: man x 2^-24, exact in f32.
            let v = man as f32 * f32::from_bits(0x3380_0000); // 2^-24
            return if sign != 0 { -v } else { v };
        }
        0x1f => sign | 0x7f80_0000 | (man << 13),
        _ => sign | ((exp + 112) << 23) | (man << 13), // rebias 15 -> 127
    };
    f32::from_bits(bits)
}

/// Converts `f32` to binary16 bits, rounding to nearest even; overflow gives infinity and
/// NaN stays NaN.
pub fn f32_to_f16(x: f32) -> u16 {
    let bits = x.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exp = ((bits >> 23) & 0xff) as i32;
    let man = bits & 0x7f_ffff;
    if exp == 0xff {
        // Infinity, or NaN (keep it quiet and non-zero).
        let nan = if man != 0 {
            0x200 | (man >> 13) as u16
        } else {
            0
        };
        return sign | 0x7c00 | nan;
    }
    let e = exp - 127 + 15;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    if e <= 0 {
        // Subnormal binary16: value = m x 2^-24 with m = (1.man) x 2^(e - 14 + 23).
        let shift = (14 - e) as u32;
        if shift > 24 {
            return sign;
        }
        let full = man | 0x80_0000;
        let m = full >> shift;
        let rem = full & ((1 << shift) - 1);
        let half = 1 << (shift - 1);
        let round = u32::from(rem > half || (rem == half && m & 1 == 1));
        return sign | (m + round) as u16;
    }
    let h = ((e as u32) << 10) | (man >> 13);
    let rem = man & 0x1fff;
    let round = u32::from(rem > 0x1000 || (rem == 0x1000 && h & 1 == 1));
    // A carry out of the mantissa bumps the exponent, up to infinity: what IEEE wants.
    sign | (h + round) as u16
}

/// Converts bfloat16 bits to `f32` (exact).
pub fn bf16_to_f32(b: u16) -> f32 {
    f32::from_bits(u32::from(b) << 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_f16_round_trips() {
        for h in 0..=u16::MAX {
            let f = f16_to_f32(h);
            if f.is_nan() {
                assert!(f16_to_f32(f32_to_f16(f)).is_nan());
            } else {
                assert_eq!(f32_to_f16(f), h, "{h:#06x} -> {f}");
            }
        }
    }

    #[test]
    fn known_values_and_rounding() {
        let cases: &[(f32, u16)] = &[
            (0.0, 0x0000),
            (-0.0, 0x8000),
            (1.0, 0x3c00),
            (-2.0, 0xc000),
            (0.1, 0x2e66),
            (65504.0, 0x7bff),
            (65520.0, 0x7c00), // rounds up to infinity
            (65519.0, 0x7bff), // rounds down
            (f32::INFINITY, 0x7c00),
            (5.960_464_5e-8, 0x0001), // 2^-24, smallest subnormal
            (2.980_232_2e-8, 0x0000), // 2^-25: tie, to even (zero)
            (4.470_348_4e-8, 0x0001), // 1.5 x 2^-25: rounds up
            (6.097_555e-5, 0x03ff),   // largest subnormal
            (1.000_488_3, 0x3c00),    // 1 + 2^-11: tie, to even
            (1.001_464_8, 0x3c02),    // 1 + 3 x 2^-11: tie, to even (up)
        ];
        for &(x, h) in cases {
            assert_eq!(f32_to_f16(x), h, "{x}");
        }
        assert!(f16_to_f32(f32_to_f16(f32::NAN)).is_nan());
    }

    #[test]
    fn bf16() {
        assert_eq!(bf16_to_f32(0x3f80), 1.0);
        assert_eq!(bf16_to_f32(0xc040), -3.0);
    }
}
