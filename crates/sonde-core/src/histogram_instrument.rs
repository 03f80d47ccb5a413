//! The histogram as an [`Instrument`]: what the registry needs to build, read and merge its
//! series. Apart from `histogram`, so the histogram module depends on neither the instrument
//! plumbing nor snapshots (they depend on it).

use std::sync::Arc;

use crate::histogram::{Histogram, HistogramConfig, HistogramCore, HistogramLayout};
use crate::instrument::{Instrument, InstrumentOptions, sealed};
use crate::kind::Kind;
use crate::number::NumberKind;
use crate::series::Series;
use crate::snapshot::Point;
use crate::{Error, Unit};

impl sealed::Sealed for Histogram {}

impl Instrument for Histogram {
    type Core = HistogramCore;
    type Config = HistogramLayout;
    const KIND: Kind = Kind::Histogram;
    const NUMBER: NumberKind = NumberKind::F64;
    const RESERVED_LABELS: &'static [&'static str] = &["le", "quantile"];

    fn make_config(
        name: &str,
        unit: &Unit,
        options: &InstrumentOptions,
    ) -> Result<HistogramLayout, Error> {
        let mut config = HistogramConfig::for_unit(unit);
        if let Some(b) = &options.buckets {
            config.buckets = b.clone();
        }
        if let Some(p) = options.precision {
            config.precision = p;
        }
        if let Some(e) = options.min_exponent {
            config.min_exponent = e;
        }
        let mut layout = HistogramLayout::new(name, unit, config)?;
        // Each stripe is a whole copy of the cells, so histograms take fewer than counters.
        layout.set_series_options(
            options.stripes.unwrap_or(1).clamp(1, 8).next_power_of_two(),
            options.exemplars.unwrap_or(false),
        );
        Ok(layout)
    }
    fn fallback_config() -> HistogramLayout {
        HistogramLayout::fallback()
    }
    fn new_core(config: &Arc<HistogramLayout>) -> HistogramCore {
        HistogramCore::new(config)
    }
    fn config_bytes(l: &HistogramLayout) -> usize {
        l.layout_bytes()
    }
    fn core_bytes(l: &HistogramLayout) -> usize {
        l.series_bytes() + l.exemplar_bytes()
    }
    fn from_series(series: Arc<Series<HistogramCore>>) -> Self {
        Histogram(series)
    }
    fn read(core: &HistogramCore) -> Point {
        Point::Histogram(core.read())
    }
    fn absorb(dst: &HistogramCore, src: &HistogramCore) {
        dst.absorb(src);
    }
}
