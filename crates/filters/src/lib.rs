//! logferry-filters: the record filters (`grep`, `modify`, `record_modifier`, `nest`, `parser`,
//! `multiline`, `rewrite_tag`, `throttle`, `type_converter`, `lua`, `aws`), one module per plugin, named after its Fluent Bit name, plus the record
//! accessor they share with the outputs.

pub mod filter_aws;
pub mod filter_grep;
pub mod filter_lua;
pub mod filter_modify;
pub mod filter_multiline;
pub mod filter_nest;
pub mod filter_parser;
pub mod filter_record_modifier;
pub mod filter_rewrite_tag;
pub mod filter_throttle;
pub mod filter_type_converter;
/// The record accessor lives in core (routes and processors use it too); re-exported here
/// for the filters and outputs that name it from this crate.
pub use logferry_core::record_accessor;
pub mod syntax;

#[cfg(test)]
mod testing;

use logferry_engine::FilterPlugin;

/// Every filter in this crate, in documentation order.
pub static PLUGINS: &[&FilterPlugin] = &[
    &filter_aws::PLUGIN,
    &filter_grep::PLUGIN,
    &filter_lua::PLUGIN,
    &filter_modify::PLUGIN,
    &filter_multiline::PLUGIN,
    &filter_nest::PLUGIN,
    &filter_parser::PLUGIN,
    &filter_record_modifier::PLUGIN,
    &filter_rewrite_tag::PLUGIN,
    &filter_throttle::PLUGIN,
    &filter_type_converter::PLUGIN,
];

#[cfg(test)]
mod tests {
    use super::PLUGINS;

    #[test]
    fn names_are_unique_and_every_option_has_a_doc_line() {
        let mut names: Vec<&str> = PLUGINS.iter().map(|p| p.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), PLUGINS.len());
        for p in PLUGINS {
            assert!(!p.options.is_empty(), "{}", p.name);
            assert!(
                p.options.iter().all(|o| !o.doc.trim().is_empty()),
                "{}",
                p.name
            );
        }
    }
}
