//! AVIF output. Opaque pictures are encoded at 4:2:0 (what libavif, and so thumbor, sharp and
//! imgproxy, write by default) by libaom (`aom.rs`, the default) or rav1e directly
//! (`encode.avif_encoder`), and wrapped by avif-serialize; pictures with transparency, and
//! every picture when the operator asks for 4:4:4, go through ravif.
//!
//! Why libaom by default: at equal DSSIM on photographs, speed 6 needs 0.78x the CPU of rav1e
//! at its best speed (8) for about 3 % fewer bytes (benches/RESULTS.md, "AVIF output
//! settings"). Each encoder has its own speed setting (`avif_speed`, `rav1e_speed`): their
//! scales do not cost the same.
//!
//! Why not ravif for everything: ravif always encodes 4:4:4. On photographs 4:2:0 reaches the
//! same DSSIM with fewer bytes and encodes half the chroma samples, which is what put ravif at
//! 2.5x thumbor's CPU for the same quality (benches/RESULTS.md, "AVIF output settings"). ravif
//! keeps the transparent case because its alpha handling (the colour of fully transparent
//! pixels bled from their neighbours, so invisible pixels cost no bytes) is worth having and
//! transparent photos are rare.

use rav1e::prelude::{
    ChromaSamplePosition, ChromaSampling, ColorDescription, ColorPrimaries, Config, Context,
    EncoderConfig, EncoderStatus, MatrixCoefficients, Pixel, PixelRange, Rational,
    SceneDetectionSpeed, SpeedSettings, TransferCharacteristics, Tune,
};
use yuv::{BufferStoreMut, YuvConversionMode, YuvPlanarImageMut, YuvRange, YuvStandardMatrix};

use super::super::spec::{AvifChroma, AvifEncoder, EncodeSettings};
use super::super::{Image, PipelineError, PixelLayout};
use super::aom;
use super::internal;

/// Encodes `image` at URL `quality` (1-100).
pub(super) fn encode(
    image: &Image,
    quality: u8,
    settings: &EncodeSettings,
) -> Result<Vec<u8>, PipelineError> {
    let speed = settings.rav1e_speed.clamp(1, 10);
    if settings.avif_chroma == AvifChroma::Yuv444 {
        return with_ravif(image, quality, speed);
    }
    let opaque_rgb;
    let rgb = match image.layout {
        PixelLayout::Rgb8 => &image.data,
        PixelLayout::Rgba8 if image.data.chunks_exact(4).all(|p| p[3] == 255) => {
            opaque_rgb = image
                .data
                .chunks_exact(4)
                .flat_map(|p| [p[0], p[1], p[2]])
                .collect::<Vec<u8>>();
            &opaque_rgb
        }
        PixelLayout::Rgba8 => return with_ravif(image, quality, speed),
    };
    subsampled(rgb, image.width, image.height, quality, settings)
}

/// URL quality to AV1's quantizer index (0 lossless-ish, 255 coarsest). Linear, as libavif
/// maps its quality (through aom's 0-63 scale, about a quarter of the index), so a URL `q`
/// means for AVIF what it means to the peers: `q=60` here lands on thumbor's `quality=60`.
fn quantizer(quality: u8) -> usize {
    (usize::from(100 - quality.clamp(1, 100)) * 255 + 50) / 100
}

/// Opaque RGB to 4:2:0 YCbCr (BT.601 full range, chroma averaged over each 2x2 block) and
/// through the configured AV1 encoder, at 8 or 10 bits.
fn subsampled(
    rgb: &[u8],
    width: u32,
    height: u32,
    quality: u8,
    settings: &EncodeSettings,
) -> Result<Vec<u8>, PipelineError> {
    let (w, h) = (width as usize, height as usize);
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    let depth = if settings.avif_bit_depth > 8 { 10 } else { 8 };
    let av1 = if depth == 10 {
        let mut planes = [vec![0u16; w * h], vec![0u16; cw * ch], vec![0u16; cw * ch]];
        let wide: Vec<u16> = rgb
            .iter()
            .map(|&v| (u16::from(v) << 2) | (u16::from(v) >> 6))
            .collect();
        let [y, u, v] = &mut planes;
        let mut target = planar(y, u, v, width, height);
        yuv::rgb10_to_i010(&mut target, &wide, width * 3, RANGE, MATRIX)
            .map_err(|e| internal("avif", e))?;
        encode_420(&planes, width, height, quality, settings)?
    } else {
        let mut planes = [vec![0u8; w * h], vec![0u8; cw * ch], vec![0u8; cw * ch]];
        let [y, u, v] = &mut planes;
        let mut target = planar(y, u, v, width, height);
        yuv::rgb_to_yuv420(
            &mut target,
            rgb,
            width * 3,
            RANGE,
            MATRIX,
            YuvConversionMode::Balanced,
        )
        .map_err(|e| internal("avif", e))?;
        encode_420(&planes, width, height, quality, settings)?
    };
    let mut container = avif_serialize::Aviffy::new();
    container
        .set_seq_profile(0)
        .set_chroma_subsampling((true, true))
        .set_matrix_coefficients(avif_serialize::constants::MatrixCoefficients::Bt601)
        .set_full_color_range(true);
    Ok(container.to_vec(&av1, None, width, height, depth))
}

/// 4:2:0 planes through the configured AV1 encoder.
fn encode_420<T: Pixel + aom::Sample>(
    planes: &[Vec<T>; 3],
    width: u32,
    height: u32,
    quality: u8,
    settings: &EncodeSettings,
) -> Result<Vec<u8>, PipelineError> {
    let [y, u, v] = planes;
    match settings.avif_encoder {
        // Past AV1 level 6.3's frame size libaom 3.6.0 writes a level 7 header that later
        // decoders refuse (fixed in 3.6.1); rav1e takes such pictures.
        AvifEncoder::Aom if width <= aom::MAX_WIDTH && height <= aom::MAX_HEIGHT => aom::encode(
            &aom::Planes {
                planes: [y, u, v],
                width,
                height,
            },
            aom_quantizer(quality),
            settings.avif_speed.clamp(1, 9),
        ),
        AvifEncoder::Aom | AvifEncoder::Rav1e => {
            let (w, h) = (width as usize, height as usize);
            let depth = if T::DEPTH > 8 { 10 } else { 8 };
            let speed = settings.rav1e_speed.clamp(1, 10);
            let config = rav1e_config(w, h, depth, quantizer(quality), speed);
            encode_planes(&config, planes, [w, w.div_ceil(2), w.div_ceil(2)])
        }
    }
}

/// URL quality to libaom's quantizer (0-63): linear, `aom::QUANTIZER_SLOPE` hundredths of a
/// step per point of quality below 100 (libavif's own mapping is 63 steps over the scale).
fn aom_quantizer(quality: u8) -> u8 {
    let steps = (u16::from(100 - quality.clamp(1, 100)) * aom::QUANTIZER_SLOPE + 50) / 100;
    steps.min(63) as u8
}

const RANGE: YuvRange = YuvRange::Full;
const MATRIX: YuvStandardMatrix = YuvStandardMatrix::Bt601;

fn planar<'a, T: Copy + std::fmt::Debug>(
    y: &'a mut [T],
    u: &'a mut [T],
    v: &'a mut [T],
    width: u32,
    height: u32,
) -> YuvPlanarImageMut<'a, T> {
    let chroma_stride = width.div_ceil(2);
    YuvPlanarImageMut {
        y_plane: BufferStoreMut::Borrowed(y),
        y_stride: width,
        u_plane: BufferStoreMut::Borrowed(u),
        u_stride: chroma_stride,
        v_plane: BufferStoreMut::Borrowed(v),
        v_stride: chroma_stride,
        width,
        height,
    }
}

/// rav1e settings for one still picture. The speed preset as given, minus what only helps
/// video (reference frames, lookahead, scene detection); tiles only where the picture is large
/// enough that each tile keeps 256x256 pixels, so small thumbnails pay no tile overhead.
fn rav1e_config(w: usize, h: usize, bit_depth: u8, quantizer: usize, speed: u8) -> Config {
    let mut speed_settings = SpeedSettings::from_preset(speed);
    speed_settings.multiref = false;
    speed_settings.rdo_lookahead_frames = 1;
    speed_settings.scene_detection_mode = SceneDetectionSpeed::None;
    let tiles = rayon::current_num_threads().min(w * h / (256 * 256)).max(1);
    let encoder = EncoderConfig {
        width: w,
        height: h,
        time_base: Rational::new(1, 1),
        bit_depth: usize::from(bit_depth),
        chroma_sampling: ChromaSampling::Cs420,
        chroma_sample_position: ChromaSamplePosition::Unknown,
        pixel_range: PixelRange::Full,
        color_description: Some(ColorDescription {
            color_primaries: ColorPrimaries::BT709,
            transfer_characteristics: TransferCharacteristics::SRGB,
            matrix_coefficients: MatrixCoefficients::BT601,
        }),
        still_picture: true,
        min_key_frame_interval: 0,
        max_key_frame_interval: 0,
        quantizer,
        min_quantizer: quantizer as u8,
        tune: Tune::Psychovisual,
        tiles,
        speed_settings,
        ..EncoderConfig::default()
    };
    Config::new().with_encoder_config(encoder)
}

/// Runs one key frame through rav1e and returns its AV1 payload. `widths` are the planes'
/// widths in samples (rows are contiguous).
fn encode_planes<T: Pixel>(
    config: &Config,
    planes: &[Vec<T>; 3],
    widths: [usize; 3],
) -> Result<Vec<u8>, PipelineError> {
    let mut ctx: Context<T> = config.new_context().map_err(|e| internal("avif", e))?;
    let mut frame = ctx.new_frame();
    for ((plane, source), width) in frame.planes.iter_mut().zip(planes).zip(widths) {
        let mut target = plane.mut_slice(Default::default());
        for (row, source) in target.rows_iter_mut().zip(source.chunks_exact(width)) {
            row[..width].copy_from_slice(source);
        }
    }
    ctx.send_frame(frame).map_err(|e| internal("avif", e))?;
    ctx.flush();
    let mut av1 = Vec::new();
    loop {
        match ctx.receive_packet() {
            Ok(mut packet) => av1.append(&mut packet.data),
            Err(EncoderStatus::Encoded) => continue,
            Err(EncoderStatus::LimitReached) => break,
            Err(e) => return Err(internal("avif", e)),
        }
    }
    Ok(av1)
}

/// The ravif quality whose quantizer index is `index`: the inverse of the piecewise-linear
/// scale ravif 0.13 documents for `with_quality`, so the URL `q` picks the same quantizer on
/// both paths.
fn ravif_quality(index: usize) -> f32 {
    let x = index as f32 / 255.0;
    let q = if x <= 0.468 {
        1.0 - x / 2.6
    } else if x < 0.75 {
        (0.875 - x) / 0.5
    } else {
        1.0 - x
    };
    (q * 100.0).clamp(1.0, 100.0)
}

/// ravif (4:4:4, 10-bit internally): alpha only when some pixel is not
/// opaque, at a quality halfway between `quality` and 100 (alpha artefacts show as ragged
/// edges, which look worse than colour noise). Threads: the current rayon pool.
fn with_ravif(image: &Image, quality: u8, speed: u8) -> Result<Vec<u8>, PipelineError> {
    let quality = ravif_quality(quantizer(quality));
    let encoder = ravif::Encoder::new()
        .with_quality(quality)
        .with_alpha_quality((quality + 100.0) / 2.0)
        .with_speed(speed);
    let (w, h) = (image.width as usize, image.height as usize);
    let encoded = match image.layout {
        PixelLayout::Rgb8 => {
            let pixels: Vec<ravif::RGB8> = image
                .data
                .chunks_exact(3)
                .map(|p| ravif::RGB8::new(p[0], p[1], p[2]))
                .collect();
            encoder.encode_rgb(ravif::Img::new(pixels.as_slice(), w, h))
        }
        PixelLayout::Rgba8 => {
            let pixels: Vec<ravif::RGBA8> = image
                .data
                .chunks_exact(4)
                .map(|p| ravif::RGBA8::new(p[0], p[1], p[2], p[3]))
                .collect();
            encoder.encode_rgba(ravif::Img::new(pixels.as_slice(), w, h))
        }
    }
    .map_err(|e| internal("avif", e))?;
    Ok(encoded.avif_file)
}

#[cfg(test)]
mod tests {
    use super::super::super::decode::test_support::{decode_fixture, difference};
    use super::super::super::{DecodeHint, Limits, decode, probe};
    use super::*;

    fn settings(chroma: AvifChroma, bit_depth: u8) -> EncodeSettings {
        with_encoder(AvifEncoder::Aom, chroma, bit_depth)
    }

    fn with_encoder(encoder: AvifEncoder, chroma: AvifChroma, bit_depth: u8) -> EncodeSettings {
        EncodeSettings {
            avif_speed: 10,
            rav1e_speed: 10,
            avif_encoder: encoder,
            avif_chroma: chroma,
            avif_bit_depth: bit_depth,
            ..EncodeSettings::default()
        }
    }

    fn decode_avif(bytes: &[u8]) -> Image {
        let limits = Limits::default();
        let info = probe(bytes, &limits).expect("probe");
        decode::decode(bytes, &info, &limits, DecodeHint::default()).expect("decode")
    }

    /// (subsampled x, subsampled y, more than 8 bits) from the file's `av1C` box: what a
    /// browser checks against the AV1 stream before it shows the picture.
    fn av1c(bytes: &[u8]) -> (bool, bool, bool) {
        let at = bytes.windows(4).position(|w| w == b"av1C").expect("av1C");
        let flags = bytes[at + 6];
        (flags & 0x08 != 0, flags & 0x04 != 0, flags & 0x40 != 0)
    }

    #[test]
    fn opaque_photos_are_420_at_either_depth_on_either_encoder_and_decode_close_to_the_source() {
        let photo = decode_fixture("photos/ladybird.jpg").expect("photo");
        for encoder in [AvifEncoder::Aom, AvifEncoder::Rav1e] {
            for depth in [8, 10] {
                let settings = with_encoder(encoder, AvifChroma::Yuv420, depth);
                let bytes = encode(&photo, 80, &settings).expect("avif");
                assert_eq!(
                    av1c(&bytes),
                    (true, true, depth == 10),
                    "{encoder:?} {depth}-bit"
                );
                let back = decode_avif(&bytes);
                assert_eq!((back.width, back.height), (1200, 750));
                assert_eq!(back.layout, PixelLayout::Rgb8);
                let (mean, _) = difference(&back, &photo);
                // q80 on a photo: a few levels on average (a colour shift or a wrong matrix or
                // range gives tens).
                assert!(
                    mean < 4.0,
                    "{encoder:?} {depth}-bit: mean difference {mean}"
                );
            }
        }
    }

    #[test]
    fn lower_quality_means_fewer_bytes_on_libaom() {
        let photo = decode_fixture("photos/ladybird.jpg").expect("photo");
        let settings = settings(AvifChroma::Yuv420, 8);
        let sizes: Vec<usize> = [90, 60, 30]
            .into_iter()
            .map(|q| encode(&photo, q, &settings).expect("avif").len())
            .collect();
        assert!(sizes[0] > sizes[1] && sizes[1] > sizes[2], "{sizes:?}");
        assert_eq!(aom_quantizer(100), 0);
        if cfg!(aom_tune_iq) {
            assert_eq!(aom_quantizer(60), 30);
            assert_eq!(aom_quantizer(80), 15);
            assert_eq!(aom_quantizer(1), 63);
        } else {
            assert_eq!(aom_quantizer(60), 25);
            assert_eq!(aom_quantizer(1), 62);
        }
    }

    #[test]
    fn odd_sizes_keep_their_size_and_colour() {
        for (w, h) in [(1, 1), (33, 17), (2, 3)] {
            let data = (0..w * h).flat_map(|_| [200u8, 40, 90]).collect();
            let image = Image::new(w, h, PixelLayout::Rgb8, data);
            for (encoder, depth) in [
                (AvifEncoder::Aom, 8),
                (AvifEncoder::Aom, 10),
                (AvifEncoder::Rav1e, 8),
            ] {
                let settings = with_encoder(encoder, AvifChroma::Yuv420, depth);
                let bytes = encode(&image, 90, &settings).unwrap();
                let back = decode_avif(&bytes);
                assert_eq!((back.width, back.height), (w, h));
                for px in back.data.chunks_exact(3) {
                    let near = px
                        .iter()
                        .zip([200u8, 40, 90])
                        .all(|(a, b)| a.abs_diff(b) <= 3);
                    assert!(near, "{w}x{h} {encoder:?} {depth}-bit: {px:?}");
                }
            }
        }
    }

    #[test]
    fn transparency_goes_through_ravif_and_opaque_rgba_drops_its_alpha() {
        let mut data = Vec::new();
        for y in 0..32u32 {
            for x in 0..48u32 {
                data.extend([
                    (x * 5) as u8,
                    (y * 7) as u8,
                    128,
                    if x < 24 { 255 } else { 60 },
                ]);
            }
        }
        let translucent = Image::new(48, 32, PixelLayout::Rgba8, data.clone());
        let bytes = encode(&translucent, 80, &EncodeSettings::default()).unwrap();
        assert_eq!(
            av1c(&bytes),
            (false, false, true),
            "ravif writes 4:4:4, 10-bit"
        );
        let back = decode_avif(&bytes);
        assert_eq!(back.layout, PixelLayout::Rgba8);
        assert!((60 - 3..=60 + 3).contains(&back.data[(10 * 48 + 40) * 4 + 3]));

        for px in data.chunks_exact_mut(4) {
            px[3] = 255;
        }
        let opaque = Image::new(48, 32, PixelLayout::Rgba8, data);
        let bytes = encode(&opaque, 80, &EncodeSettings::default()).unwrap();
        assert!(av1c(&bytes).0, "opaque RGBA is 4:2:0");
        assert_eq!(decode_avif(&bytes).layout, PixelLayout::Rgb8);
    }

    #[test]
    fn the_operator_can_ask_for_444() {
        let photo = decode_fixture("photos/ladybird.jpg").expect("photo");
        let bytes = encode(&photo, 80, &settings(AvifChroma::Yuv444, 10)).unwrap();
        assert_eq!(av1c(&bytes), (false, false, true));
        let (mean, _) = difference(&decode_avif(&bytes), &photo);
        assert!(mean < 4.0, "mean difference {mean}");
    }

    #[test]
    fn quality_maps_onto_the_quantizer_in_order_on_both_paths() {
        assert_eq!(quantizer(100), 0);
        assert_eq!(quantizer(1), 252);
        assert_eq!(quantizer(60), 102);
        let mut last = (usize::MAX, 0.0);
        for q in 1..=100 {
            let (index, ravif) = (quantizer(q), ravif_quality(quantizer(q)));
            assert!(index < last.0 && ravif > last.1, "q{q}: {index} {ravif}");
            assert!((1.0..=100.0).contains(&ravif));
            last = (index, ravif);
        }
    }
}
