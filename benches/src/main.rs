//! tracemark-bench: experiments and the robustness runner.

use std::path::PathBuf;

use tracemark::SecretKey;
use tracemark::io::{Limits, image::read};
use tracemark::mark::detect::{DetectOptions, Detector};
use tracemark::mark::embed::{EmbedOptions, embed};
use tracemark::mark::pattern::KeyPatterns;
use tracemark::raster::Raster;
use tracemark_bench::*;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let gamma: f32 = args.first().map(|s| s.parse().unwrap()).unwrap_or(0.5);
    let psnr: f64 = args.get(1).map(|s| s.parse().unwrap()).unwrap_or(42.0);
    let files = ["camera.png", "astronaut.png", "coffee.png", "retina.jpg"];
    type Attack = (&'static str, Box<dyn Fn(&Raster) -> Raster>);
    let attacks: Vec<Attack> = vec![
        ("none", Box::new(|r: &Raster| r.clone())),
        ("jpeg50", Box::new(|r: &Raster| jpeg(r, 50))),
        ("scale0.5", Box::new(|r: &Raster| scale(r, 0.5, Filter::Triangle))),
        ("crop25", Box::new(|r: &Raster| crop_fraction(r, 0.25, 0.37, 0.61))),
        ("rot3", Box::new(|r: &Raster| rotate(r, 3.0))),
        ("invert", Box::new(invert)),
        ("s0.5+j75", Box::new(|r: &Raster| jpeg(&scale(r, 0.5, Filter::Cubic), 75))),
        ("s0.33", Box::new(|r: &Raster| scale(r, 0.33, Filter::Box))),
    ];
    for f in files {
        let (orig, _) = read(&PathBuf::from("testdata").join(f), &Limits::default())?;
        for k in 0..3u8 {
            let key = SecretKey::from_bytes([k + 40; 32]);
            let payload = 0x9e37_79b9_7f4a_7c15u64.wrapping_mul(u64::from(k) + 1);
            let e = embed(&orig.luminance(), &KeyPatterns::new(&key), payload, &EmbedOptions::new().with_mask_gamma(gamma).with_psnr_db(psnr))?;
            let mut m = orig.clone();
            m.apply_delta(&e.delta);
            let det = Detector::new(&key);
            let mut line = format!("{f:14} k{k} psnr {:.2} |", m.psnr_db(&orig));
            for (name, a) in &attacks {
                let t = std::time::Instant::now();
                let d = det.detect(&a(&m).luminance(), &DetectOptions::default())?;
                let ok = d.payload == Some(payload);
                line += &format!(" {name} {}{:.1} {}ms |", if ok { "+" } else if d.marked { "?" } else { "-" }, d.z, t.elapsed().as_millis());
            }
            println!("{line}");
        }
        let det = Detector::new(&SecretKey::from_bytes([99; 32]));
        let d = det.detect(&orig.luminance(), &DetectOptions::default())?;
        println!("{f:14} unmarked z {:.2} marked={}", d.z, d.marked);
    }
    Ok(())
}
