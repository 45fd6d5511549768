//! Replays a folder (or glob) of JPEG/PNG images as frames, once or in a loop.

use std::path::{Path, PathBuf};

use super::{CaptureError, FrameSource, Shot};
use crate::config::FilesConfig;
use crate::imaging::decode::{decode_image, ImageLimits};

/// Every image file a `source.files.path` names, sorted: a folder (searched
/// recursively) or a glob pattern.
pub fn list(spec: &str) -> Result<Vec<PathBuf>, CaptureError> {
    let path = Path::new(spec);
    let mut found = Vec::new();
    if path.is_dir() {
        walk(path, &mut found).map_err(|e| {
            CaptureError::Fatal(format!("cannot read folder {}: {e}", path.display()))
        })?;
    } else {
        let entries =
            glob::glob(spec).map_err(|e| CaptureError::Fatal(format!("bad glob {spec:?}: {e}")))?;
        found.extend(entries.filter_map(Result::ok).filter(|p| is_image(p)));
    }
    found.sort();
    if found.is_empty() {
        return Err(CaptureError::Fatal(format!(
            "no .jpg, .jpeg or .png images at {spec:?}"
        )));
    }
    Ok(found)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let p = entry?.path();
        if p.is_dir() {
            walk(&p, out)?;
        } else if is_image(&p) {
            out.push(p);
        }
    }
    Ok(())
}

/// Whether a path has an image extension edgehead decodes.
pub fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .map(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
        .unwrap_or(false)
}

/// The `files` source: decodes one image per frame, in path order, skipping (and
/// logging) the ones that cannot be decoded.
pub struct Files {
    paths: Vec<PathBuf>,
    /// Prefix stripped from paths to name frames.
    root: PathBuf,
    next: usize,
    fps: f64,
    repeat: bool,
    limits: ImageLimits,
    /// Consecutive unreadable files; a whole pass of them means nothing is usable.
    failures: usize,
}

impl Files {
    /// Replay `paths`, refusing images with a side above `max_side`; the decode
    /// budget is the default one until [`Files::with_limits`] sets both.
    pub fn new(paths: Vec<PathBuf>, c: &FilesConfig, max_side: u32) -> Self {
        let root = Path::new(&c.path);
        let root = if root.is_dir() {
            root.to_path_buf()
        } else {
            PathBuf::new()
        };
        Self {
            paths,
            root,
            next: 0,
            fps: c.fps,
            repeat: c.repeat,
            limits: ImageLimits {
                max_side,
                ..ImageLimits::default()
            },
            failures: 0,
        }
    }

    /// Decode with these limits (`ImageLimits::from_config(&config.learn)`).
    pub fn with_limits(mut self, limits: ImageLimits) -> Self {
        self.limits = limits;
        self
    }
}

impl FrameSource for Files {
    fn next_frame(&mut self) -> Result<Option<Shot>, CaptureError> {
        loop {
            if self.next >= self.paths.len() {
                if !self.repeat {
                    return Ok(None);
                }
                self.next = 0;
            }
            if self.failures >= self.paths.len() {
                return Err(CaptureError::Fatal("none of the images can be read".into()));
            }
            let path = &self.paths[self.next];
            self.next += 1;
            let decoded = std::fs::read(path)
                .map_err(|e| e.to_string())
                .and_then(|bytes| decode_image(&bytes, &self.limits).map_err(|e| e.to_string()));
            match decoded {
                Ok(image) => {
                    self.failures = 0;
                    let name = path.strip_prefix(&self.root).unwrap_or(path);
                    return Ok(Some(Shot {
                        image,
                        name: Some(name.to_string_lossy().into_owned()),
                    }));
                }
                Err(error) => {
                    self.failures += 1;
                    tracing::warn!(path = %path.display(), %error, "skipping unreadable image");
                }
            }
        }
    }

    fn fps(&self) -> Option<f64> {
        Some(self.fps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::RgbImage;

    fn setup() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).expect("mkdir");
        RgbImage::from_pixel(8, 8, image::Rgb([10, 20, 30]))
            .save(dir.path().join("b.png"))
            .expect("save");
        RgbImage::from_pixel(8, 8, image::Rgb([40, 50, 60]))
            .save(sub.join("a.JPG"))
            .expect("save");
        std::fs::write(dir.path().join("broken.jpg"), b"not an image").expect("write");
        std::fs::write(dir.path().join("notes.txt"), b"ignored").expect("write");
        dir
    }

    #[test]
    fn lists_folders_recursively_and_globs() {
        let dir = setup();
        let all = list(dir.path().to_str().expect("utf8")).expect("list");
        let names: Vec<_> = all
            .iter()
            .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["b.png", "broken.jpg", "a.JPG"]);
        let pngs = list(&format!("{}/*.png", dir.path().display())).expect("glob");
        assert_eq!(pngs.len(), 1);
        assert!(matches!(
            list(&format!("{}/*.gif", dir.path().display())),
            Err(CaptureError::Fatal(_))
        ));
    }

    #[test]
    fn skips_unreadable_files_and_ends_or_loops() {
        let dir = setup();
        let paths = list(dir.path().to_str().expect("utf8")).expect("list");
        let mut c = FilesConfig {
            path: String::new(),
            fps: 0.0,
            repeat: false,
        };
        let mut once = Files::new(paths.clone(), &c, 4096);
        let mut n = 0;
        let mut names = Vec::new();
        while let Some(shot) = once.next_frame().expect("frame") {
            assert_eq!(shot.image.dimensions(), (8, 8));
            names.push(shot.name.expect("files have names"));
            n += 1;
        }
        assert!(names[1].ends_with("a.JPG"), "{names:?}");
        assert_eq!(n, 2, "two readable images, the broken one skipped");
        c.repeat = true;
        let mut looping = Files::new(paths, &c, 4096);
        for _ in 0..5 {
            assert!(looping.next_frame().expect("frame").is_some());
        }
    }

    #[test]
    fn a_folder_of_only_broken_images_is_fatal_not_a_busy_loop() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("x.jpg"), b"junk").expect("write");
        let paths = list(dir.path().to_str().expect("utf8")).expect("list");
        let c = FilesConfig {
            path: String::new(),
            fps: 0.0,
            repeat: true,
        };
        let mut s = Files::new(paths, &c, 4096);
        assert!(matches!(s.next_frame(), Err(CaptureError::Fatal(_))));
    }

    #[test]
    fn the_decode_limits_apply() {
        let dir = setup();
        let paths = list(dir.path().to_str().expect("utf8")).expect("list");
        let c = FilesConfig {
            path: String::new(),
            fps: 0.0,
            repeat: false,
        };
        // 8x8 RGB is 192 bytes: a 100-byte budget refuses the PNG, and the JPEG is
        // decoded at half size.
        let tiny = ImageLimits {
            max_side: 4096,
            budget_bytes: 100,
        };
        let mut s = Files::new(paths.clone(), &c, 4096).with_limits(tiny);
        let shot = s.next_frame().expect("frame").expect("the JPEG");
        assert!(shot.name.expect("name").ends_with("a.JPG"));
        assert_eq!(shot.image.dimensions(), (4, 4));
        assert!(s.next_frame().expect("end").is_none());
        let mut s = Files::new(paths, &c, 7);
        assert!(
            s.next_frame().expect("end").is_none(),
            "8x8 is above 7 pixels per side"
        );
    }
}
