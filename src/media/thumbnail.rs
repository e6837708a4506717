//! Thumbnails: which size to make, and making it.
//!
//! Requests are mapped onto the spec's recommended sizes, so each media has at most five
//! thumbnails however many sizes clients ask for. Decoding is bounded: the image's
//! dimensions are read from its header first and images over the pixel limit are refused
//! before any pixel is decoded; the decoder also runs under `image`'s allocation limits. The
//! caller runs [`render`] on the blocking pool under a timeout.

use std::fs::File;
use std::io::{BufRead, BufReader, Cursor, Seek};
use std::path::Path;

use image::imageops::FilterType;
use image::{DynamicImage, ImageFormat, ImageReader, Limits};
use ruma::UInt;
use ruma::media::Method;

/// The sizes the spec recommends servers generate.
const SIZES: [Size; 5] = [
    Size::new(32, 32, Fit::Crop),
    Size::new(96, 96, Fit::Crop),
    Size::new(320, 240, Fit::Scale),
    Size::new(640, 480, Fit::Scale),
    Size::new(800, 600, Fit::Scale),
];

/// Whether a thumbnail fills its box (cropping) or fits inside it (scaling).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    Crop,
    Scale,
}

impl Fit {
    pub fn from_method(method: Option<&Method>) -> Fit {
        match method {
            Some(Method::Crop) => Fit::Crop,
            _ => Fit::Scale,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Fit::Crop => "crop",
            Fit::Scale => "scale",
        }
    }
}

/// A thumbnail size bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    pub width: u32,
    pub height: u32,
    pub method: Fit,
}

impl Size {
    const fn new(width: u32, height: u32, method: Fit) -> Size {
        Size {
            width,
            height,
            method,
        }
    }
}

/// A thumbnail as asked for by a client or a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wanted {
    pub width: u32,
    pub height: u32,
    pub fit: Fit,
}

impl Wanted {
    /// From a request's query: sizes past `u32` are as good as infinite, no method is `scale`.
    pub fn new(width: UInt, height: UInt, method: Option<&Method>) -> Wanted {
        let dimension = |n: UInt| u32::try_from(u64::from(n)).unwrap_or(u32::MAX);
        Wanted {
            width: dimension(width),
            height: dimension(height),
            fit: Fit::from_method(method),
        }
    }
}

/// The bucket for a request: the smallest recommended size of the asked method that is at
/// least as large as asked; else the smallest of any method that is; else the largest.
pub fn choose(width: u32, height: u32, method: Fit) -> Size {
    let covers = |s: &&Size| s.width >= width && s.height >= height;
    let area = |s: &&Size| s.width * s.height;
    SIZES
        .iter()
        .filter(|s| s.method == method)
        .filter(covers)
        .min_by_key(area)
        .or_else(|| SIZES.iter().filter(covers).min_by_key(area))
        .or_else(|| SIZES.iter().max_by_key(area))
        .copied()
        .unwrap_or(SIZES[0])
}

#[derive(Debug, thiserror::Error)]
pub enum ThumbnailError {
    #[error("not an image that can be thumbnailed")]
    NotAnImage,
    #[error("image is larger than {0} pixels")]
    TooManyPixels(u64),
    #[error("thumbnail I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("encoding the thumbnail failed: {0}")]
    Encode(String),
}

/// A made thumbnail.
pub struct Rendered {
    pub bytes: Vec<u8>,
    pub content_type: &'static str,
}

/// Make the `size` thumbnail of the image in `path`. Blocking.
pub fn render(path: &Path, size: Size, max_pixels: u64) -> Result<Rendered, ThumbnailError> {
    render_from(|| Ok(BufReader::new(File::open(path)?)), size, max_pixels)
}

/// [`render`] for an image in memory.
pub fn render_bytes(bytes: &[u8], size: Size, max_pixels: u64) -> Result<Rendered, ThumbnailError> {
    render_from(|| Ok(Cursor::new(bytes)), size, max_pixels)
}

/// The image is read twice, the header alone first: `open` gives a reader from its start.
fn render_from<R: BufRead + Seek>(
    open: impl Fn() -> std::io::Result<R>,
    size: Size,
    max_pixels: u64,
) -> Result<Rendered, ThumbnailError> {
    let reader = ImageReader::new(open()?).with_guessed_format()?;
    let format = match reader.format() {
        Some(f @ (ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::Gif | ImageFormat::WebP)) => {
            f
        }
        _ => return Err(ThumbnailError::NotAnImage),
    };
    let (w, h) = reader
        .into_dimensions()
        .map_err(|_| ThumbnailError::NotAnImage)?;
    if u64::from(w) * u64::from(h) > max_pixels {
        return Err(ThumbnailError::TooManyPixels(max_pixels));
    }
    let mut reader = ImageReader::new(open()?);
    reader.set_format(format);
    let mut limits = Limits::default();
    limits.max_image_width = Some(w);
    limits.max_image_height = Some(h);
    // The decoded frame (at most 16 bytes a pixel) plus the decoder's own working memory.
    limits.max_alloc = Some(max_pixels.saturating_mul(16).max(64 * 1024 * 1024));
    reader.limits(limits);
    let image = reader.decode().map_err(|e| match e {
        image::ImageError::Limits(_) => ThumbnailError::TooManyPixels(max_pixels),
        _ => ThumbnailError::NotAnImage,
    })?;
    let thumb = resize(&image, size);
    let mut out = Cursor::new(Vec::new());
    let content_type = if format == ImageFormat::Jpeg {
        let rgb = DynamicImage::ImageRgb8(thumb.into_rgb8());
        let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85);
        rgb.write_with_encoder(encoder)
            .map_err(|e| ThumbnailError::Encode(e.to_string()))?;
        "image/jpeg"
    } else {
        thumb
            .write_to(&mut out, ImageFormat::Png)
            .map_err(|e| ThumbnailError::Encode(e.to_string()))?;
        "image/png"
    };
    Ok(Rendered {
        bytes: out.into_inner(),
        content_type,
    })
}

/// Scale to fit inside the box, or fill the box and crop the overflow centred. Images are
/// never enlarged: a crop of a small image keeps the box's aspect ratio at its own scale.
fn resize(image: &DynamicImage, size: Size) -> DynamicImage {
    let (w, h) = (image.width().max(1), image.height().max(1));
    let (bw, bh) = (size.width, size.height);
    match size.method {
        Fit::Scale if w <= bw && h <= bh => image.clone(),
        Fit::Scale => image.resize(bw, bh, FilterType::Triangle),
        Fit::Crop if w >= bw && h >= bh => image.resize_to_fill(bw, bh, FilterType::Triangle),
        Fit::Crop => {
            let cw = w.min((u64::from(h) * u64::from(bw) / u64::from(bh)).max(1) as u32);
            let ch = h.min((u64::from(w) * u64::from(bh) / u64::from(bw)).max(1) as u32);
            image.crop_imm((w - cw) / 2, (h - ch) / 2, cw, ch)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_map_onto_recommended_sizes() {
        let s = |w, h, m| {
            let c = choose(w, h, m);
            (c.width, c.height, c.method)
        };
        assert_eq!(s(32, 32, Fit::Crop), (32, 32, Fit::Crop));
        assert_eq!(s(40, 40, Fit::Crop), (96, 96, Fit::Crop));
        assert_eq!(s(1, 1, Fit::Scale), (320, 240, Fit::Scale));
        assert_eq!(s(600, 400, Fit::Scale), (640, 480, Fit::Scale));
        // No crop bucket is large enough: the smallest scale bucket that is.
        assert_eq!(s(300, 200, Fit::Crop), (320, 240, Fit::Scale));
        // Nothing is large enough: the largest.
        assert_eq!(s(4000, 4000, Fit::Scale), (800, 600, Fit::Scale));
    }

    fn png(w: u32, h: u32) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 7]));
        img.save_with_format(file.path(), ImageFormat::Png).unwrap();
        file
    }

    fn dims(r: &Rendered) -> (u32, u32) {
        let img = image::load_from_memory(&r.bytes).unwrap();
        (img.width(), img.height())
    }

    #[test]
    fn crop_fills_scale_fits_and_small_images_are_not_enlarged() {
        let big = png(400, 200);
        let crop = render(big.path(), choose(96, 96, Fit::Crop), 1 << 30).unwrap();
        assert_eq!(crop.content_type, "image/png");
        assert_eq!(dims(&crop), (96, 96));
        let scale = render(big.path(), choose(320, 240, Fit::Scale), 1 << 30).unwrap();
        assert_eq!(dims(&scale), (320, 160));
        let small = png(50, 20);
        let scale = render(small.path(), choose(320, 240, Fit::Scale), 1 << 30).unwrap();
        assert_eq!(dims(&scale), (50, 20));
        let crop = render(small.path(), choose(96, 96, Fit::Crop), 1 << 30).unwrap();
        assert_eq!(dims(&crop), (20, 20));
    }

    #[test]
    fn bad_or_huge_images_are_refused_without_decoding() {
        let big = png(400, 200);
        assert!(matches!(
            render(big.path(), choose(32, 32, Fit::Crop), 1000),
            Err(ThumbnailError::TooManyPixels(1000))
        ));
        let text = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(text.path(), b"just some text, not an image").unwrap();
        assert!(matches!(
            render(text.path(), choose(32, 32, Fit::Crop), 1 << 30),
            Err(ThumbnailError::NotAnImage)
        ));
        // A PNG header promising a huge image, then garbage.
        let mut bytes = std::fs::read(big.path()).unwrap();
        bytes.truncate(60);
        bytes.extend_from_slice(&[0xAB; 100]);
        std::fs::write(text.path(), &bytes).unwrap();
        assert!(matches!(
            render(text.path(), choose(32, 32, Fit::Crop), 1 << 30),
            Err(ThumbnailError::NotAnImage)
        ));
    }
}
