//! ITU-T G.711 companded samples (mu-law and A-law) to linear 16-bit. hound reads neither and
//! symphonia only with an 18-byte `fmt ` chunk, which many writers do not produce.

/// Mu-law byte to linear 16-bit (G.711 section 2: stored inverted; bias 0x84, 3-bit segment,
/// 4-bit step). Range ±32124.
pub fn mulaw_to_i16(byte: u8) -> i16 {
    const BIAS: i32 = 0x84;
    let u = !byte;
    let segment = i32::from((u >> 4) & 0x07);
    let step = i32::from(u & 0x0F);
    let magnitude = (((step << 3) + BIAS) << segment) - BIAS;
    let v = if u & 0x80 != 0 { -magnitude } else { magnitude };
    v as i16
}

/// A-law byte to linear 16-bit (G.711 section 3: even bits inverted, i.e. XOR 0x55; sign bit
/// set means positive). Range ±32256.
pub fn alaw_to_i16(byte: u8) -> i16 {
    let a = byte ^ 0x55;
    let segment = i32::from((a >> 4) & 0x07);
    let step = i32::from(a & 0x0F);
    let mut magnitude = (step << 4) + 8;
    if segment > 0 {
        magnitude = (magnitude + 0x100) << (segment - 1);
    }
    let v = if a & 0x80 != 0 { magnitude } else { -magnitude };
    v as i16
}

/// Mu-law byte to `[-1, 1]` (the 16-bit value scaled by 1/32768).
pub fn mulaw_to_f32(byte: u8) -> f32 {
    f32::from(mulaw_to_i16(byte)) / 32_768.0
}

/// A-law byte to `[-1, 1]` (the 16-bit value scaled by 1/32768).
pub fn alaw_to_f32(byte: u8) -> f32 {
    f32::from(alaw_to_i16(byte)) / 32_768.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mulaw_known_values() {
        assert_eq!(mulaw_to_i16(0xFF), 0);
        assert_eq!(mulaw_to_i16(0x7F), 0);
        assert_eq!(mulaw_to_i16(0x80), 32_124);
        assert_eq!(mulaw_to_i16(0x00), -32_124);
        assert_eq!(mulaw_to_i16(0xFE), -mulaw_to_i16(0x7E));
    }

    #[test]
    fn alaw_known_values() {
        assert_eq!(alaw_to_i16(0xD5), 8);
        assert_eq!(alaw_to_i16(0x55), -8);
        assert_eq!(alaw_to_i16(0xAA), 32_256);
        assert_eq!(alaw_to_i16(0x2A), -32_256);
    }

    #[test]
    fn scaled_to_unit_range() {
        assert_eq!(mulaw_to_f32(0xFF), 0.0);
        assert_eq!(mulaw_to_f32(0x7F), 0.0);
        assert_eq!(mulaw_to_f32(0x00), -32_124.0 / 32_768.0);
        assert_eq!(mulaw_to_f32(0x80), 32_124.0 / 32_768.0);
        assert_eq!(alaw_to_f32(0xD5), 8.0 / 32_768.0);
        assert_eq!(alaw_to_f32(0x55), -8.0 / 32_768.0);
        assert_eq!(alaw_to_f32(0x2A), -32_256.0 / 32_768.0);
        assert_eq!(alaw_to_f32(0xAA), 32_256.0 / 32_768.0);
    }

    #[test]
    fn both_laws_are_monotonic() {
        // Positive codes (mu-law: 0x80..=0xFF runs from max down to 0).
        let mu: Vec<i16> = (0x80..=0xFFu8).map(mulaw_to_i16).collect();
        assert!(mu.windows(2).all(|w| w[0] > w[1]));
        // A-law positive codes, in segment/step order after undoing the XOR.
        let a: Vec<i16> = (0x80..=0xFFu8).map(|c| alaw_to_i16(c ^ 0x55)).collect();
        assert!(a.windows(2).all(|w| w[0] < w[1]));
    }
}
