//! Charts of results: throughput against thread count, one line per store.
//!
//! ```text
//!              Title
//!   ops/s ┤            ●───●        the x axis is logarithmic, ticked at exactly
//!         │      ●────╯             the thread counts the series hold (1, 4, 16, 64
//!         │ ●───╯                   are evenly spaced); y starts at 0
//!       0 ┼──┬─────┬─────┬───
//!            1     4     16  threads
//!      ── strongbox   ── redis      the legend sits in a strip under the chart,
//!                                   so it never covers a line
//! ```
//!
//! The backend follows the file's extension: `.svg` writes SVG (text stays text, drawn
//! by the viewer in its own sans-serif), `.png` rasterises with plotters' bitmap
//! backend, three times oversize and averaged down (`SUPERSAMPLE`). Raster text needs
//! a font, and the project must build with nothing but a Rust toolchain, so plotters'
//! `ttf` feature (fontconfig and FreeType from the system) is out. Instead plotters'
//! pure-Rust `ab_glyph` renderer draws with Noto Sans Regular, whose bytes the
//! `ttf-noto-sans` crate compiles in (font: Apache-2.0, as its name table says).
//! plotters measures text with that font for both formats; where an SVG viewer's font
//! runs wider, `SVG_TEXT_STRETCH` keeps legend entries apart.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// One line on a throughput chart.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// The name in the legend: a store, a configuration.
    pub label: String,
    /// `(threads, operations per second)`, in any order; drawn sorted by threads.
    pub points: Vec<(usize, f64)>,
}

/// Why a chart was not written.
#[derive(Debug)]
#[non_exhaustive]
pub enum PlotError {
    /// The path's extension names no format drawn here (`.svg` and `.png` are);
    /// `extension` is empty when the path has none.
    UnknownExtension { path: PathBuf, extension: String },
    /// No series has a point: there is nothing to draw.
    NoPoints,
    /// A point that cannot go on the chart: zero threads (the x axis is logarithmic) or
    /// a throughput that is negative or not finite.
    InvalidPoint {
        series: String,
        threads: usize,
        ops_per_sec: f64,
    },
    /// The bundled font did not parse, so no text can be drawn.
    Font,
    /// plotters failed to draw or to write the file (a missing directory, a full disk).
    Draw { path: PathBuf, message: String },
}

impl fmt::Display for PlotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlotError::UnknownExtension { path, extension } if extension.is_empty() => write!(
                f,
                "{} has no extension: name the chart .svg or .png",
                path.display()
            ),
            PlotError::UnknownExtension { path, extension } => write!(
                f,
                "cannot draw a chart as .{extension} ({}): use .svg or .png",
                path.display()
            ),
            PlotError::NoPoints => write!(f, "no series has a point to plot"),
            PlotError::InvalidPoint {
                series,
                threads,
                ops_per_sec,
            } => write!(
                f,
                "series {series:?} has a point that cannot be plotted: \
                 {threads} threads, {ops_per_sec} ops/s"
            ),
            PlotError::Font => write!(f, "the bundled chart font did not load"),
            PlotError::Draw { path, message } => {
                write!(f, "drawing {}: {message}", path.display())
            }
        }
    }
}

impl std::error::Error for PlotError {}

/// The size of every chart, in pixels (SVG user units).
const SIZE: (u32, u32) = (1024, 640);
/// The font family every text style names; the bundled font is registered under it.
const FAMILY: &str = "sans-serif";

/// Colours told apart with the common kinds of colour blindness, in the order series
/// get them: Okabe and Ito's, with their yellow (too faint on white) replaced by a
/// purple. The ninth series reuses the first colour.
const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
    RGBColor(117, 112, 179),
];

/// Draws operations per second against threads, one line with point markers per
/// series, to `path`: SVG for `.svg`, PNG for `.png` (either case).
pub fn plot_throughput(path: &Path, title: &str, series: &[Series]) -> Result<(), PlotError> {
    let extension = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    // Check the name first: a caller's typo should not wait on the data.
    if extension != "svg" && extension != "png" {
        return Err(PlotError::UnknownExtension {
            path: path.to_path_buf(),
            extension,
        });
    }
    let axes = Axes::of(series)?;
    register_bundled_font()?;
    if extension == "svg" {
        let root = SVGBackend::new(path, SIZE).into_drawing_area();
        draw_throughput(&root, title, series, &axes, 1, SVG_TEXT_STRETCH)
            .and_then(|()| root.present())
            .map_err(|e| draw_error(path, e))
    } else {
        write_png(path, title, series, &axes)
    }
}

/// How much wider SVG text may render than plotters measured it.
///
/// plotters measures text with the bundled font at the size taken as the glyphs' full
/// height (ascent plus descent, 1.36 em for Noto Sans), but writes the SVG `font-size`
/// as the size over 1.24, and the viewer draws with its own sans-serif (DejaVu Sans and
/// Verdana run wider than Noto Sans). 1.36 / 1.24 = 1.1, and a wide font adds up to a
/// fifth more. Only the legend packs text side by side, so only it uses this.
const SVG_TEXT_STRETCH: f64 = 1.3;

/// How many device pixels a PNG pixel is drawn as, each way, before averaging down.
///
/// plotters' bitmap lines are not anti-aliased, and its `ab_glyph` text places each
/// glyph up to two pixels off (it truncates the pen position and drops the glyph's
/// side bearing), which reads as uneven letter spacing at label sizes. Drawing three
/// times larger and averaging each 3x3 block cuts both to under a pixel.
const SUPERSAMPLE: u32 = 3;

/// Draws the chart `SUPERSAMPLE` times larger into memory, averages it down to [`SIZE`]
/// and writes that as PNG.
fn write_png(path: &Path, title: &str, series: &[Series], axes: &Axes) -> Result<(), PlotError> {
    let large = (SIZE.0 * SUPERSAMPLE, SIZE.1 * SUPERSAMPLE);
    let mut pixels = vec![0u8; large.0 as usize * large.1 as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, large).into_drawing_area();
        draw_throughput(&root, title, series, axes, SUPERSAMPLE, 1.0)
            .and_then(|()| root.present())
            .map_err(|e| draw_error(path, e))?;
    }
    let small = downsample(&pixels, SIZE, SUPERSAMPLE);
    let mut png = BitMapBackend::new(path, SIZE);
    png.blit_bitmap((0, 0), SIZE, &small)
        .and_then(|()| png.present())
        .map_err(|e| draw_error(path, e))
}

/// Averages each `factor` x `factor` block of an RGB image `factor` times the size of
/// `(width, height)`.
fn downsample(large: &[u8], (width, height): (u32, u32), factor: u32) -> Vec<u8> {
    let (width, height, factor) = (width as usize, height as usize, factor as usize);
    let large_row = width * factor * 3;
    let mut small = Vec::with_capacity(width * height * 3);
    for y in 0..height {
        for x in 0..width {
            for channel in 0..3 {
                let sum: usize = (0..factor * factor)
                    .map(|i| {
                        let (dy, dx) = (i / factor, i % factor);
                        large[(y * factor + dy) * large_row + (x * factor + dx) * 3 + channel]
                            as usize
                    })
                    .sum();
                small.push(((sum + factor * factor / 2) / (factor * factor)) as u8);
            }
        }
    }
    small
}

fn draw_error(path: &Path, e: impl fmt::Display) -> PlotError {
    PlotError::Draw {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Registers Noto Sans under [`FAMILY`] once per process; plotters' `ab_glyph` renderer
/// finds no font otherwise.
fn register_bundled_font() -> Result<(), PlotError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let registered = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FAMILY, FontStyle::Normal, ttf_noto_sans::REGULAR).is_ok()
    });
    registered.then_some(()).ok_or(PlotError::Font)
}

/// The ranges of a throughput chart, worked out (and the points checked) before drawing.
struct Axes {
    /// Every thread count any series has, ascending: the x ticks.
    threads: Vec<f64>,
    x: std::ops::Range<f64>,
    y: std::ops::Range<f64>,
}

impl Axes {
    fn of(series: &[Series]) -> Result<Axes, PlotError> {
        let mut threads = Vec::new();
        let mut top = 0f64;
        for s in series {
            for &(t, ops) in &s.points {
                if t == 0 || !ops.is_finite() || ops < 0.0 {
                    return Err(PlotError::InvalidPoint {
                        series: s.label.clone(),
                        threads: t,
                        ops_per_sec: ops,
                    });
                }
                threads.push(t);
                top = top.max(ops);
            }
        }
        threads.sort_unstable();
        threads.dedup();
        let (Some(&first), Some(&last)) = (threads.first(), threads.last()) else {
            return Err(PlotError::NoPoints);
        };
        // A third of a doubling of room each side keeps end markers off the frame.
        let pad = 2f64.powf(0.35);
        Ok(Axes {
            x: first as f64 / pad..last as f64 * pad,
            threads: threads.into_iter().map(|t| t as f64).collect(),
            // 8% headroom over the highest point; an all-zero chart still gets a y range.
            y: 0.0..if top > 0.0 { top * 1.08 } else { 1.0 },
        })
    }
}

/// Draws the whole chart on `root`: title, axes, lines, the legend strip. Every length
/// is in chart pixels times `scale`, so `root` must be [`SIZE`] times `scale`; the
/// legend allows for text `text_stretch` times as wide as measured.
fn draw_throughput<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    series: &[Series],
    axes: &Axes,
    scale: u32,
    text_stretch: f64,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let px = |n: u32| n * scale;
    root.fill(&WHITE)?;
    let legend = Legend::new(scale, text_stretch);
    let rows = legend.rows(root, series)?;
    // Past half the image the legend is cut off rather than squeezing the chart away.
    let legend_height = (rows.len() as u32 * px(LEGEND_ROW) + px(12)).min(px(SIZE.1) / 2);
    let (chart_area, legend_area) = root.split_vertically(px(SIZE.1) - legend_height);

    let mut chart = ChartBuilder::on(&chart_area)
        .caption(title, (FAMILY, px(30)))
        .margin(px(20))
        .x_label_area_size(px(56))
        .y_label_area_size(px(84))
        .build_cartesian_2d(
            axes.x
                .clone()
                .log_scale()
                .with_key_points(axes.threads.clone()),
            axes.y.clone(),
        )?;
    chart
        .configure_mesh()
        .x_desc("threads")
        .y_desc("operations per second")
        .axis_desc_style((FAMILY, px(20)))
        .label_style((FAMILY, px(18)))
        .x_label_formatter(&|t| format!("{t:.0}"))
        .y_label_formatter(&|ops| compact(*ops))
        .set_all_tick_mark_size(px(5))
        .axis_style(BLACK.stroke_width(scale))
        .light_line_style(TRANSPARENT)
        .bold_line_style(BLACK.mix(0.12).stroke_width(scale))
        .draw()?;

    for (s, color) in series.iter().zip(PALETTE.iter().cycle()) {
        let mut points: Vec<(f64, f64)> = s.points.iter().map(|&(t, o)| (t as f64, o)).collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart.draw_series(LineSeries::new(points.clone(), color.stroke_width(px(3))))?;
        chart.draw_series(
            points
                .into_iter()
                .map(|p| Circle::new(p, px(5), color.filled())),
        )?;
    }

    legend.draw(&legend_area, series, &rows)
}

/// Height of one legend row, in chart pixels.
const LEGEND_ROW: u32 = 30;

/// One laid-out legend entry: which series, and its width including the swatch.
struct Entry {
    series: usize,
    width: i32,
}

/// The legend strip's metrics at one scale.
struct Legend<'a> {
    scale: i32,
    font: TextStyle<'a>,
    /// How much wider than measured the text may draw (see [`SVG_TEXT_STRETCH`]).
    text_stretch: f64,
    /// Width of an entry's line sample; the gap after it; the gap between entries.
    swatch: i32,
    swatch_gap: i32,
    entry_gap: i32,
}

impl Legend<'_> {
    fn new(scale: u32, text_stretch: f64) -> Self {
        let s = scale as i32;
        Legend {
            scale: s,
            font: TextStyle::from((FAMILY, 19 * scale)),
            text_stretch,
            swatch: 34 * s,
            swatch_gap: 8 * s,
            entry_gap: 32 * s,
        }
    }

    /// Packs the entries into rows as wide as the image allows, in series order.
    fn rows<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
        series: &[Series],
    ) -> Result<Vec<Vec<Entry>>, DrawingAreaErrorKind<DB::ErrorType>> {
        let room = root.dim_in_pixel().0 as i32 - 2 * self.entry_gap;
        let mut rows: Vec<Vec<Entry>> = Vec::new();
        let mut used = 0;
        for (i, s) in series.iter().enumerate() {
            let (text, _) = root.estimate_text_size(&s.label, &self.font)?;
            let text = (f64::from(text) * self.text_stretch).ceil() as i32;
            let width = self.swatch + self.swatch_gap + text;
            match rows.last_mut() {
                Some(row) if used + self.entry_gap + width <= room => {
                    used += self.entry_gap + width;
                    row.push(Entry { series: i, width });
                }
                _ => {
                    used = width;
                    rows.push(vec![Entry { series: i, width }]);
                }
            }
        }
        Ok(rows)
    }

    /// Draws the rows centred in `area`: a line sample with its marker, then the label.
    /// Rows that do not fit give way to a last line counting the series left out.
    fn draw<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        series: &[Series],
        rows: &[Vec<Entry>],
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        let font = self.font.pos(Pos::new(HPos::Left, VPos::Center));
        let row_height = LEGEND_ROW as i32 * self.scale;
        let fit = (area.dim_in_pixel().1 as i32 / row_height).max(1) as usize;
        let shown = if rows.len() > fit {
            fit - 1
        } else {
            rows.len()
        };
        for (r, row) in rows.iter().enumerate().take(shown) {
            let y = r as i32 * row_height + row_height / 2;
            let gaps = self.entry_gap * (row.len() as i32 - 1);
            let width: i32 = row.iter().map(|e| e.width).sum::<i32>() + gaps;
            let mut x = (area.dim_in_pixel().0 as i32 - width) / 2;
            for entry in row {
                let color = PALETTE[entry.series % PALETTE.len()];
                let line = color.stroke_width(3 * self.scale as u32);
                area.draw(&PathElement::new(vec![(x, y), (x + self.swatch, y)], line))?;
                let marker = (x + self.swatch / 2, y);
                area.draw(&Circle::new(marker, 5 * self.scale, color.filled()))?;
                let label = series[entry.series].label.as_str();
                let at = (x + self.swatch + self.swatch_gap, y);
                area.draw(&Text::new(label, at, &font))?;
                x += entry.width + self.entry_gap;
            }
        }
        if shown < rows.len() {
            let left_out: usize = rows[shown..].iter().map(Vec::len).sum();
            let centred = self.font.pos(Pos::new(HPos::Center, VPos::Center));
            let y = shown as i32 * row_height + row_height / 2;
            let note = format!("and {left_out} more series not listed");
            area.draw(&Text::new(
                note,
                (area.dim_in_pixel().0 as i32 / 2, y),
                &centred,
            ))?;
        }
        Ok(())
    }
}

/// An axis value with a metric suffix: `0`, `750`, `250k`, `1.25M`, `2G`.
fn compact(value: f64) -> String {
    let (scaled, suffix) = match value.abs() {
        v if v >= 1e9 => (value / 1e9, "G"),
        v if v >= 1e6 => (value / 1e6, "M"),
        v if v >= 1e3 => (value / 1e3, "k"),
        _ => (value, ""),
    };
    let digits = format!("{scaled:.2}");
    let digits = digits.trim_end_matches('0').trim_end_matches('.');
    format!("{digits}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Series> {
        vec![
            Series {
                label: "strongbox (aes-gcm)".into(),
                points: vec![
                    (1, 41_000.0),
                    (4, 120_500.0),
                    (16, 180_000.0),
                    (64, 176_000.0),
                ],
            },
            Series {
                label: "strongbox (plaintext)".into(),
                // Out of order on purpose: drawn sorted.
                points: vec![
                    (16, 230_000.0),
                    (1, 52_000.0),
                    (64, 236_000.0),
                    (4, 150_000.0),
                ],
            },
            Series {
                label: "redis".into(),
                points: vec![
                    (1, 90_000.0),
                    (4, 210_000.0),
                    (16, 260_000.0),
                    (64, 255_000.0),
                ],
            },
        ]
    }

    #[test]
    fn svg_holds_the_title_and_every_label() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("throughput.svg");
        plot_throughput(&path, "YCSB-A, 100k records", &sample()).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
        let labels: Vec<String> = sample().into_iter().map(|s| s.label).collect();
        for text in labels
            .iter()
            .map(String::as_str)
            .chain(["YCSB-A, 100k records", "threads"])
        {
            assert!(svg.contains(text), "SVG lacks {text:?}");
        }
    }

    #[test]
    fn png_is_a_real_image() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("throughput.PNG");
        plot_throughput(&path, "YCSB-A, 100k records", &sample()).unwrap();
        let png = std::fs::read(&path).unwrap();
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
        // A blank 1024x640 canvas compresses to a few KiB; lines and text add far more.
        assert!(png.len() > 20_000, "PNG is only {} bytes", png.len());
    }

    #[test]
    fn unknown_or_missing_extension_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = plot_throughput(&dir.path().join("chart.jpeg"), "t", &sample()).unwrap_err();
        assert!(
            matches!(&err, PlotError::UnknownExtension { extension, .. } if extension == "jpeg")
        );
        assert!(err.to_string().contains(".jpeg"), "{err}");
        let err = plot_throughput(&dir.path().join("chart"), "t", &sample()).unwrap_err();
        assert!(err.to_string().contains("no extension"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn bad_data_is_refused_before_drawing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chart.svg");
        assert!(matches!(
            plot_throughput(&path, "t", &[]),
            Err(PlotError::NoPoints)
        ));
        let zero = [Series {
            label: "z".into(),
            points: vec![(0, 1.0)],
        }];
        assert!(matches!(
            plot_throughput(&path, "t", &zero),
            Err(PlotError::InvalidPoint { .. })
        ));
        let nan = [Series {
            label: "n".into(),
            points: vec![(1, f64::NAN)],
        }];
        assert!(matches!(
            plot_throughput(&path, "t", &nan),
            Err(PlotError::InvalidPoint { .. })
        ));
        assert!(!path.exists());
    }

    #[test]
    fn one_point_and_all_zero_charts_draw() {
        let dir = tempfile::tempdir().unwrap();
        let one = [Series {
            label: "one".into(),
            points: vec![(8, 1234.0)],
        }];
        plot_throughput(&dir.path().join("one.png"), "one point", &one).unwrap();
        let zeros = [Series {
            label: "idle".into(),
            points: vec![(1, 0.0), (2, 0.0)],
        }];
        plot_throughput(&dir.path().join("zeros.svg"), "all zero", &zeros).unwrap();
    }

    #[test]
    fn a_missing_directory_is_a_draw_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no/such/dir/chart.png");
        let err = plot_throughput(&path, "t", &sample()).unwrap_err();
        assert!(matches!(err, PlotError::Draw { .. }), "{err:?}");
    }

    #[test]
    fn downsample_averages_blocks() {
        // A 4x2 RGB image of two 2x2 blocks: one grey ramp, one solid red.
        #[rustfmt::skip]
        let large = [
            0, 0, 0,   40, 40, 40,   255, 0, 0,  255, 0, 0,
            80, 80, 80, 120, 120, 120, 255, 0, 0,  255, 0, 0,
        ];
        assert_eq!(downsample(&large, (2, 1), 2), [60, 60, 60, 255, 0, 0]);
    }

    #[test]
    fn compact_axis_values() {
        let cases = [
            (0.0, "0"),
            (750.0, "750"),
            (100_000.0, "100k"),
            (250_000.0, "250k"),
            (1_250_000.0, "1.25M"),
            (2e9, "2G"),
        ];
        for (value, expected) in cases {
            assert_eq!(compact(value), expected);
        }
    }
}
