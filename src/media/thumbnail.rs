//! Thumbnailing: which configured size serves a request, and making it. Decoding runs on the
//! blocking pool, never on the request workers, and only after the image's header has shown
//! its pixel count to be within the limit; the decoder's allocations are capped as well, so a
//! decompression bomb or a truncated file is an error, not a crash or a stall.

use std::io::Cursor;

use image::{
    AnimationDecoder, DynamicImage, Frame, ImageDecoder, ImageFormat, ImageReader, Limits, codecs::gif::GifDecoder,
    codecs::webp::WebPDecoder, imageops::FilterType, metadata::Orientation,
};

use crate::config::{ThumbnailMethod, ThumbnailSize};

/// Most frames an animated thumbnail keeps.
const MAX_FRAMES: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ThumbnailError {
    /// Not an image in a format we thumbnail (JPEG, PNG, GIF, WebP), or a broken one.
    Unsupported(String),
    /// More pixels than the configured limit.
    TooLarge,
}

pub struct Thumbnail {
    pub bytes: Vec<u8>,
    pub content_type: &'static str,
    pub width: u32,
    pub height: u32,
}

/// The configured size that serves a request for at least `width`×`height` by `method`: the
/// smallest of that method that is large enough. `None` when none is, and the original (never
/// smaller than asked) should be served instead.
pub fn choose(sizes: &[ThumbnailSize], width: u32, height: u32, method: ThumbnailMethod) -> Option<ThumbnailSize> {
    sizes
        .iter()
        .filter(|size| size.method == method && size.width >= width && size.height >= height)
        .min_by_key(|size| u64::from(size.width) * u64::from(size.height))
        .copied()
}

/// Reads the format and dimensions from the header only.
pub fn probe(bytes: &[u8]) -> Result<(ImageFormat, u32, u32), ThumbnailError> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|error| ThumbnailError::Unsupported(error.to_string()))?;
    let format = reader
        .format()
        .filter(|format| {
            matches!(
                format,
                ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::Gif | ImageFormat::WebP
            )
        })
        .ok_or_else(|| ThumbnailError::Unsupported("not a JPEG, PNG, GIF or WebP image".to_owned()))?;
    let (width, height) = reader
        .into_dimensions()
        .map_err(|error| ThumbnailError::Unsupported(error.to_string()))?;
    Ok((format, width, height))
}

/// Makes the thumbnail of `size` from `bytes`, or `None` when the image is no larger than the
/// thumbnail would be (it is served as it is: thumbnails are never upscaled).
pub fn make(
    bytes: &[u8],
    size: ThumbnailSize,
    animated: bool,
    max_pixels: u64,
) -> Result<Option<Thumbnail>, ThumbnailError> {
    let (format, width, height) = probe(bytes)?;
    let pixels = u64::from(width) * u64::from(height);
    if pixels > max_pixels {
        return Err(ThumbnailError::TooLarge);
    }
    // JPEG decoders fill in a cut-off image with grey; a thumbnail of it would be wrong.
    if format == ImageFormat::Jpeg && !has_jpeg_end(bytes) {
        return Err(ThumbnailError::Unsupported("the JPEG image is truncated".to_owned()));
    }
    let still_of_animation = !animated && matches!(format, ImageFormat::Gif | ImageFormat::WebP);
    let (out_width, out_height) = match target_dimensions(width, height, size) {
        Some(dimensions) => dimensions,
        // A small GIF or WebP may be animated, which a client that did not ask for animation
        // must not get: its first frame, at its own size, is the thumbnail.
        None if still_of_animation => (width, height),
        None => return Ok(None),
    };
    let limits = limits(max_pixels);
    if animated
        && matches!(format, ImageFormat::Gif | ImageFormat::WebP)
        && let Some(thumbnail) = animated_thumbnail(bytes, format, size, (out_width, out_height), pixels, max_pixels)?
    {
        return Ok(Some(thumbnail));
    }
    let unsupported = |error: image::ImageError| ThumbnailError::Unsupported(error.to_string());
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(unsupported)?;
    // Phone cameras store photos sideways with an EXIF orientation: thumbnails come upright.
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let mut image = DynamicImage::from_decoder(decoder).map_err(unsupported)?;
    let (mut out_width, mut out_height) = (out_width, out_height);
    if orientation != Orientation::NoTransforms {
        image.apply_orientation(orientation);
        // A quarter turn swaps width and height; never upscale.
        (out_width, out_height) =
            target_dimensions(image.width(), image.height(), size).unwrap_or((image.width(), image.height()));
    }
    let resized = resize(&image, size.method, out_width, out_height);
    let mut out = Cursor::new(Vec::new());
    // JPEG stays JPEG (photos); everything else becomes PNG, which keeps transparency.
    let (output_format, content_type) = if format == ImageFormat::Jpeg {
        (ImageFormat::Jpeg, "image/jpeg")
    } else {
        (ImageFormat::Png, "image/png")
    };
    let resized = if output_format == ImageFormat::Jpeg {
        DynamicImage::ImageRgb8(resized.to_rgb8())
    } else {
        resized
    };
    resized
        .write_to(&mut out, output_format)
        .map_err(|error| ThumbnailError::Unsupported(error.to_string()))?;
    Ok(Some(Thumbnail {
        bytes: out.into_inner(),
        content_type,
        width: resized.width(),
        height: resized.height(),
    }))
}

/// Whether a JPEG has its end-of-image marker, allowing for up to 4 KiB of trailing padding
/// (some cameras add it).
fn has_jpeg_end(bytes: &[u8]) -> bool {
    let tail = &bytes[bytes.len().saturating_sub(4096)..];
    tail.windows(2).any(|pair| pair == [0xFF, 0xD9])
}

fn limits(max_pixels: u64) -> Limits {
    let mut limits = Limits::default();
    // Four bytes per pixel, twice over for the decoder's working buffers.
    limits.max_alloc = Some(max_pixels.saturating_mul(8));
    limits
}

/// The output size, or `None` when making it would mean upscaling.
fn target_dimensions(width: u32, height: u32, size: ThumbnailSize) -> Option<(u32, u32)> {
    match size.method {
        ThumbnailMethod::Crop => (width > size.width && height > size.height).then_some((size.width, size.height)),
        ThumbnailMethod::Scale => {
            if width <= size.width && height <= size.height {
                return None;
            }
            // Fit inside the box, keeping the aspect ratio.
            let scale = f64::min(
                f64::from(size.width) / f64::from(width),
                f64::from(size.height) / f64::from(height),
            );
            let out_width = ((f64::from(width) * scale).round() as u32).max(1);
            let out_height = ((f64::from(height) * scale).round() as u32).max(1);
            Some((out_width, out_height))
        }
    }
}

fn resize(image: &DynamicImage, method: ThumbnailMethod, width: u32, height: u32) -> DynamicImage {
    match method {
        ThumbnailMethod::Crop => image.resize_to_fill(width, height, FilterType::Triangle),
        ThumbnailMethod::Scale => image.resize_exact(width, height, FilterType::Triangle),
    }
}

/// An animated GIF thumbnail of an animated GIF or WebP; `None` when the image has a single
/// frame or decoding every frame would exceed the pixel limit (a still thumbnail serves then).
fn animated_thumbnail(
    bytes: &[u8],
    format: ImageFormat,
    size: ThumbnailSize,
    (width, height): (u32, u32),
    frame_pixels: u64,
    max_pixels: u64,
) -> Result<Option<Thumbnail>, ThumbnailError> {
    let unsupported = |error: image::ImageError| ThumbnailError::Unsupported(error.to_string());
    let frames: Vec<Frame> = match format {
        ImageFormat::Gif => {
            let mut decoder = GifDecoder::new(Cursor::new(bytes)).map_err(unsupported)?;
            decoder.set_limits(limits(max_pixels)).map_err(unsupported)?;
            take_frames(decoder.into_frames(), frame_pixels, max_pixels)?
        }
        _ => {
            let mut decoder = WebPDecoder::new(Cursor::new(bytes)).map_err(unsupported)?;
            if !decoder.has_animation() {
                return Ok(None);
            }
            decoder.set_limits(limits(max_pixels)).map_err(unsupported)?;
            take_frames(decoder.into_frames(), frame_pixels, max_pixels)?
        }
    };
    if frames.len() < 2 {
        return Ok(None);
    }
    let frames = frames.into_iter().map(|frame| {
        let delay = frame.delay();
        let image = DynamicImage::ImageRgba8(frame.into_buffer());
        Frame::from_parts(resize(&image, size.method, width, height).to_rgba8(), 0, 0, delay)
    });
    let mut out = Vec::new();
    {
        let mut encoder = image::codecs::gif::GifEncoder::new(&mut out);
        encoder
            .set_repeat(image::codecs::gif::Repeat::Infinite)
            .map_err(unsupported)?;
        encoder.encode_frames(frames).map_err(unsupported)?;
    }
    Ok(Some(Thumbnail {
        bytes: out,
        content_type: "image/gif",
        width,
        height,
    }))
}

/// Decodes frames while their total pixel count stays within `max_pixels`; `Ok(vec![])` when it
/// would not (the caller falls back to a still thumbnail).
fn take_frames(frames: image::Frames<'_>, frame_pixels: u64, max_pixels: u64) -> Result<Vec<Frame>, ThumbnailError> {
    let budget = (max_pixels / frame_pixels.max(1)).min(MAX_FRAMES as u64) as usize;
    let mut taken = Vec::new();
    for frame in frames.take(budget + 1) {
        let frame = frame.map_err(|error| ThumbnailError::Unsupported(error.to_string()))?;
        taken.push(frame);
    }
    if taken.len() > budget {
        // More frames than the budget: keep the first ones only if the budget is the frame cap.
        if budget == MAX_FRAMES {
            taken.truncate(MAX_FRAMES);
        } else {
            return Ok(Vec::new());
        }
    }
    Ok(taken)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes() -> Vec<ThumbnailSize> {
        crate::config::MediaConfig::default().thumbnail_sizes
    }

    #[test]
    fn the_smallest_large_enough_size_is_chosen() {
        let pick = |w, h, m| choose(&sizes(), w, h, m).map(|size| (size.width, size.height));
        assert_eq!(pick(32, 32, ThumbnailMethod::Crop), Some((32, 32)));
        assert_eq!(pick(40, 40, ThumbnailMethod::Crop), Some((96, 96)));
        assert_eq!(pick(100, 100, ThumbnailMethod::Crop), None);
        assert_eq!(pick(300, 200, ThumbnailMethod::Scale), Some((320, 240)));
        assert_eq!(pick(700, 500, ThumbnailMethod::Scale), Some((800, 600)));
        assert_eq!(pick(1000, 10, ThumbnailMethod::Scale), None);
    }

    #[test]
    fn thumbnails_are_never_upscaled() {
        let crop = ThumbnailSize {
            width: 96,
            height: 96,
            method: ThumbnailMethod::Crop,
        };
        assert_eq!(target_dimensions(50, 200, crop), None);
        assert_eq!(target_dimensions(200, 100, crop), Some((96, 96)));
        let scale = ThumbnailSize {
            width: 320,
            height: 240,
            method: ThumbnailMethod::Scale,
        };
        assert_eq!(target_dimensions(300, 200, scale), None);
        assert_eq!(target_dimensions(640, 240, scale), Some((320, 120)));
    }
}
