//! Experiments on the live testbed (`vnctl experiment run`) and their reports.
//!
//! The pure parts, each unit-tested: [`plan`] (the experiment file, checked once), [`arrivals`]
//! (the schedule: arrival times, lifetimes, VN shapes, deterministic for a seed), [`records`]
//! (what a run records, CSV and JSON) and [`report`] (SVG plots and `report.html`). The live part,
//! [`runner`], drives the controller through the ordinary client as each provider.

pub mod arrivals;
pub mod offline;
pub mod plan;
pub mod records;
pub mod report;
pub mod runner;
