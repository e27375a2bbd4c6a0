//! Building a pipeline from a configuration: every section becomes a plugin instance with typed
//! options, and every mistake is collected (not just the first) with its file, line and key, so
//! that `--dry-run` can report them all at once.

use std::collections::HashMap;
use std::sync::Arc;

use logferry_core::config::{suggest, Config, ConfigError, Entry, OptSpec, Section, SectionKind};
use logferry_core::{Matcher, Tag};

use crate::common::{
    not_applied, FilterCommon, InputCommon, OutputCommon, RetryLimit, ServiceOptions,
    FILTER_NOT_APPLIED, INPUT_NOT_APPLIED, OUTPUT_NOT_APPLIED, SERVICE_NOT_APPLIED,
};
use crate::condition::Condition;
use crate::metrics::{Metrics, PluginMetrics};
use crate::plugin::{BuildContext, Filter, Input, Output, Plugin, Registry};
use crate::routes::{InputRoutes, RouteSpecs};
use crate::storage::dead_letters::DeadLetters;
use crate::storage::{Storage, StorageSettings, SyncMode};

/// Default `Mem_Buf_Limit` when a section sets none: Fluent Bit's `storage.max_chunks_up`
/// (128) times its 2MB chunk size. Fluent Bit itself has no default limit for memory buffering,
/// which is how agents run out of memory when an output is down (fluent-bit#8908).
pub const DEFAULT_MEM_BUF_LIMIT: usize = 256 * 1024 * 1024;

pub(crate) struct InputInstance {
    pub name: String,
    /// The plugin's Fluent Bit name (its chunks carry it, [`Chunk::origin`]).
    pub plugin_name: &'static str,
    pub tag: Tag,
    pub mem_buf_limit: usize,
    pub plugin: Box<dyn Input>,
    pub metrics: Arc<PluginMetrics>,
    /// `storage.type filesystem`: its chunks are written to `storage.path` and acknowledged
    /// once there.
    pub filesystem: bool,
    /// `storage.pause_on_chunks_overlimit`.
    pub pause_on_overlimit: bool,
    /// YAML `processors.logs`, run on this input's records before anything else.
    pub processors: Vec<FilterInstance>,
    /// YAML `routes`, resolved once every output is built.
    pub routes: Option<InputRoutes>,
}

pub(crate) struct FilterInstance {
    pub name: String,
    /// `None` for a processor, which applies to every record of its input or output.
    pub matcher: Option<Matcher>,
    /// A processor's `condition`.
    pub condition: Option<Condition>,
    pub plugin: Box<dyn Filter>,
    pub metrics: Arc<PluginMetrics>,
}

pub(crate) struct OutputInstance {
    pub name: String,
    /// The plugin's Fluent Bit name (routes may name an output by it).
    pub plugin_name: &'static str,
    /// `None`: only routes reach this output.
    pub matcher: Option<Matcher>,
    /// YAML `processors.logs`, run on each batch before it is flushed.
    pub processors: Option<Arc<crate::processors::OutputProcessors>>,
    pub retry_limit: RetryLimit,
    pub workers: usize,
    pub plugin: Arc<dyn Output>,
    pub metrics: Arc<PluginMetrics>,
    /// `storage.total_limit_size`.
    pub total_limit_size: Option<u64>,
    /// Where the section starts, for notes.
    pub span: logferry_core::config::Span,
}

/// A configuration turned into plugin instances, ready to run.
pub struct Pipeline {
    pub service: ServiceOptions,
    pub metrics: Arc<Metrics>,
    pub(crate) inputs: Vec<InputInstance>,
    pub(crate) filters: Vec<FilterInstance>,
    pub(crate) outputs: Vec<OutputInstance>,
    /// The filesystem store, when `storage.path` is set.
    pub storage: Option<Arc<Storage>>,
    /// The dead-letter store, with `storage.keep.rejected On`.
    pub dead_letters: Option<Arc<DeadLetters>>,
    /// What the configuration asks for that logferry accepts but does not apply, each with
    /// its file, line and key: logged at start and printed by `--dry-run`.
    pub notes: Vec<ConfigError>,
}

/// Every mistake found while building, in file order.
#[derive(Debug)]
pub struct BuildErrors(pub Vec<ConfigError>);

impl std::fmt::Display for BuildErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for BuildErrors {}

fn names(specs: &'static [OptSpec]) -> impl Iterator<Item = &'static str> {
    specs
        .iter()
        .flat_map(|o| std::iter::once(o.name).chain(o.aliases.iter().copied()))
}

/// Splits a section's entries into the ones the shared options know and the plugin's own; a
/// key the plugin declares itself (an output's own `host`) is the plugin's.
fn split<'a>(
    section: &'a Section,
    shared: &'static [OptSpec],
    own: &'static [OptSpec],
) -> (Vec<&'a Entry>, Vec<&'a Entry>) {
    section
        .entries
        .iter()
        .partition(|e| shared.iter().any(|o| o.is(&e.key)) && !own.iter().any(|o| o.is(&e.key)))
}

/// `<plugin>.<n>`, or the `Alias`. As in Fluent Bit 5.1, `n` counts the sections of one kind
/// (inputs, filters, outputs) in config order across plugins: a `grep` then a `modify` filter
/// are `grep.0` and `modify.1`; an aliased section takes a number too.
fn instance_name(
    counts: &mut HashMap<&'static str, usize>,
    kind: &'static str,
    plugin: &'static str,
    alias: Option<&str>,
) -> String {
    let n = counts.entry(kind).or_insert(0);
    let name = match alias {
        Some(a) if !a.is_empty() => a.to_string(),
        _ => format!("{plugin}.{n}"),
    };
    *n += 1;
    name
}

/// Finds the plugin a section names, or explains why not.
fn lookup<B>(
    registry: &Registry,
    kind: &'static str,
    list: &[&'static Plugin<B>],
    section: &Section,
    name: &str,
) -> Result<&'static Plugin<B>, ConfigError> {
    if let Some(p) = list.iter().copied().find(|p| p.is(name)) {
        return Ok(p);
    }
    let span = section
        .get("name")
        .map(|e| e.span.clone())
        .unwrap_or_else(|| section.span.clone());
    if registry.is_planned(kind, name) {
        return Err(ConfigError::key(
            &span,
            "Name",
            format!("{kind} plugin '{name}' is not yet available in logferry"),
        ));
    }
    let mut reason = format!("unknown {kind} plugin '{name}'");
    let candidates = list
        .iter()
        .flat_map(|p| std::iter::once(p.name).chain(p.aliases.iter().copied()))
        .chain(
            registry
                .planned
                .iter()
                .filter(|(k, _)| *k == kind)
                .map(|(_, n)| *n),
        );
    if let Some(s) = suggest(name, candidates) {
        reason.push_str(&format!(" (did you mean '{s}'?)"));
    }
    Err(ConfigError::key(&span, "Name", reason))
}

fn matcher(
    section: &Section,
    match_: Option<&str>,
    match_regex: Option<&str>,
) -> Result<Option<Matcher>, ConfigError> {
    if let Some(re) = match_regex.filter(|s| !s.is_empty()) {
        let span = section
            .get("match_regex")
            .map(|e| e.span.clone())
            .unwrap_or_else(|| section.span.clone());
        return Matcher::regex(re).map(Some).map_err(|e| {
            ConfigError::key(
                &span,
                "Match_Regex",
                format!("invalid regular expression: {e}"),
            )
        });
    }
    Ok(match_.filter(|s| !s.is_empty()).map(Matcher::glob))
}

impl Pipeline {
    /// Builds every instance the configuration declares. Parsers files must already be loaded
    /// into `config` ([`Config::load_parsers_files`]).
    pub fn build(config: Config, registry: &Registry) -> Result<Pipeline, BuildErrors> {
        let config = Arc::new(config);
        let mut errors = Vec::new();
        let mut metrics = Metrics::default();
        let base_dir = config.base_dir();

        // [SERVICE]: several sections merge, later keys win (Fluent Bit reads them in order).
        let service_entries: Vec<&Entry> = config
            .sections(SectionKind::Service)
            .flat_map(|s| s.entries.iter())
            .collect();
        let service_span = config
            .sections(SectionKind::Service)
            .next()
            .map(|s| s.span.clone())
            .unwrap_or_else(logferry_core::config::Span::command_line);
        let service = match ServiceOptions::from_entries(&service_span, &service_entries, &[]) {
            Ok(s) => Some(s),
            Err(e) => {
                errors.extend(e.into_vec());
                None
            }
        };

        // Parsers are built once for every plugin that names one. When one is broken, the
        // plugins that name it are not also told it is unknown: the parser's error says it.
        let mut broken_parsers: Vec<String> = Vec::new();
        let parsers = Arc::new(match logferry_parsers::Parsers::from_config(&config) {
            Ok(p) => p,
            Err(errs) => {
                errors.extend(errs);
                broken_parsers = config
                    .sections
                    .iter()
                    .filter(|s| {
                        matches!(s.kind, SectionKind::Parser | SectionKind::MultilineParser)
                    })
                    .filter_map(|s| s.name().map(|n| n.trim().to_string()))
                    .collect();
                logferry_parsers::Parsers::builtin()
            }
        });
        let mut notes = not_applied(SERVICE_NOT_APPLIED, service_entries.iter().copied());
        let (storage, dead_letters) = match &service {
            Some(service) => open_storage(&config, service, &service_span, &mut errors, &mut notes),
            None => (None, None),
        };
        // Memory inputs' chunks are counted whenever there is a store or its metrics are
        // asked for (Fluent Bit's storage layer always exists).
        metrics.storage = match (&storage, &service) {
            (Some(s), _) => Some(Arc::clone(&s.gauges)),
            (None, Some(sv)) if sv.storage_metrics => Some(Arc::default()),
            _ => None,
        };
        let metrics = Arc::new(metrics);
        let env = Env {
            config: &config,
            registry,
            base_dir: &base_dir,
            metrics: &metrics,
            parsers: &parsers,
            service: service.as_ref(),
            storage: storage.as_ref(),
            plugin_notes: Arc::default(),
            extra_inputs: Arc::default(),
        };

        let mut counts: HashMap<&'static str, usize> = HashMap::new();
        let mut inputs = Vec::new();
        let mut filters = Vec::new();
        let mut outputs = Vec::new();
        // Each input's routes as written, resolved once every output is built.
        let mut route_specs: Vec<Option<RouteSpecs>> = Vec::new();

        for section in &config.sections {
            let r = match section.kind {
                SectionKind::Input => {
                    build_input(&env, &mut counts, section, &mut notes).map(|(i, r)| {
                        inputs.push(i);
                        route_specs.push(r);
                    })
                }
                SectionKind::Filter => {
                    build_filter(&env, &mut counts, section, &mut notes).map(|f| filters.extend(f))
                }
                SectionKind::Output => {
                    build_output(&env, &mut counts, section, &mut notes).map(|o| outputs.extend(o))
                }
                // Parsers were built above, once for every plugin.
                SectionKind::Service => service_nested(section, &mut notes),
                SectionKind::Parser | SectionKind::MultilineParser => Ok(()),
                SectionKind::Extensions => {
                    notes.push(ConfigError::key(
                        &section.span,
                        "extensions",
                        "accepted but not applied: settings for tools around the agent, which Fluent Bit does not act on either",
                    ));
                    Ok(())
                }
                other => {
                    notes.push(ConfigError::at(
                        &section.span,
                        format!(
                            "[{}] section is accepted but not applied by logferry",
                            other.header()
                        ),
                    ));
                    Ok(())
                }
            };
            if let Err(e) = r {
                errors.extend(e.into_vec().into_iter().filter(|e| {
                    let s = e.to_string();
                    !broken_parsers.iter().any(|n| {
                        s.contains(&format!("unknown parser '{n}'"))
                            || s.contains(&format!("unknown multiline parser '{n}'"))
                    })
                }));
            }
        }

        // Inputs plugins stand for (rewrite_tag's emitters) show after the configured ones.
        if let (Ok(mut extra), Ok(mut l)) = (env.extra_inputs.lock(), metrics.inputs.lock()) {
            l.append(&mut extra);
        }

        if errors.is_empty() {
            // Fluent Bit 5.1: with one input and one output, an output without Match gets
            // every record (observed; with two inputs it warns "NO match for … instance").
            if let ([_], [only], true) = (
                &inputs[..],
                &mut outputs[..],
                route_specs.iter().all(Option::is_none),
            ) {
                if only.matcher.is_none() {
                    only.matcher = Some(Matcher::glob("*"));
                }
            }
            if let Err(e) = connect_routes(&mut inputs, &mut outputs, route_specs, &mut notes) {
                errors.push(e);
            }
            if let Ok(mut l) = metrics.outputs.lock() {
                l.extend(outputs.iter().map(|o| Arc::clone(&o.metrics)));
            }
        }
        if let Ok(mut n) = env.plugin_notes.lock() {
            notes.append(&mut n);
        }
        if let Some(note) =
            filter_workers_note(service.as_ref(), &service_entries, &inputs, &filters)
        {
            notes.push(note);
        }
        if errors.is_empty() && inputs.is_empty() {
            let span = config
                .path
                .as_deref()
                .map_or_else(logferry_core::config::Span::command_line, |p| {
                    logferry_core::config::Span::new(&Arc::from(p), 1)
                });
            errors.push(ConfigError::at(&span, "no inputs defined"));
        }
        match service {
            Some(service) if errors.is_empty() => Ok(Pipeline {
                service,
                metrics,
                inputs,
                filters,
                outputs,
                storage,
                dead_letters,
                notes,
            }),
            _ => Err(BuildErrors(errors)),
        }
    }

    /// Instance names of the inputs, filters and outputs, in order (for logs and tests).
    pub fn instance_names(&self) -> (Vec<String>, Vec<String>, Vec<String>) {
        (
            self.inputs.iter().map(|i| i.name.clone()).collect(),
            self.filters.iter().map(|f| f.name.clone()).collect(),
            self.outputs.iter().map(|o| o.name.clone()).collect(),
        )
    }
}

/// A note when `[SERVICE] logferry.filter_workers` asks for more than one task and the filters
/// cannot be sharded (see [`crate::router::unshardable`]): logged at start and by `--dry-run`.
fn filter_workers_note(
    service: Option<&ServiceOptions>,
    entries: &[&Entry],
    inputs: &[InputInstance],
    filters: &[FilterInstance],
) -> Option<ConfigError> {
    let want = service?.filter_workers?;
    if want <= 1 {
        return None;
    }
    let procs = inputs
        .iter()
        .any(|i| !i.processors.is_empty() || i.routes.is_some());
    let why = crate::router::unshardable(procs, filters)?;
    let entry = entries
        .iter()
        .rev()
        .find(|e| e.key.trim().eq_ignore_ascii_case("logferry.filter_workers"))?;
    Some(ConfigError::key(
        &entry.span,
        &entry.key,
        format!("{want} is not applied: {why}; the filters run on one task"),
    ))
}

fn section_name(section: &Section) -> Result<&str, ConfigError> {
    section
        .name()
        .filter(|n| !n.trim().is_empty())
        .map(str::trim)
        .ok_or_else(|| {
            ConfigError::at(
                &section.span,
                format!("[{}] section without a Name", section.kind.header()),
            )
        })
}

/// What every plugin constructor needs from the pipeline being built.
pub(crate) struct Env<'a> {
    config: &'a Arc<Config>,
    pub(crate) registry: &'a Registry,
    base_dir: &'a std::path::Path,
    metrics: &'a Metrics,
    parsers: &'a Arc<logferry_parsers::Parsers>,
    service: Option<&'a ServiceOptions>,
    storage: Option<&'a Arc<Storage>>,
    /// Where plugins put their notes ([`BuildContext::note`]).
    plugin_notes: Arc<std::sync::Mutex<Vec<ConfigError>>>,
    /// Input metrics plugins add ([`BuildContext::input_metrics`]).
    extra_inputs: Arc<std::sync::Mutex<Vec<Arc<PluginMetrics>>>>,
}

/// The span of `key` in `section`, or of the section.
fn span_of(section: &Section, key: &str) -> logferry_core::config::Span {
    section
        .get(key)
        .map(|e| e.span.clone())
        .unwrap_or_else(|| section.span.clone())
}

/// The span of a `[SERVICE]` key, wherever it was written.
fn service_span_of(
    config: &Config,
    key: &str,
    fallback: &logferry_core::config::Span,
) -> logferry_core::config::Span {
    config
        .sections(SectionKind::Service)
        .filter_map(|s| s.get(key))
        .last()
        .map_or_else(|| fallback.clone(), |e| e.span.clone())
}

/// Opens `storage.path` and the dead-letter store, as `[SERVICE]` asks.
fn open_storage(
    config: &Config,
    service: &ServiceOptions,
    service_span: &logferry_core::config::Span,
    errors: &mut Vec<ConfigError>,
    notes: &mut Vec<ConfigError>,
) -> (Option<Arc<Storage>>, Option<Arc<DeadLetters>>) {
    let at = |key: &str| service_span_of(config, key, service_span);
    let sync = match SyncMode::parse(&service.storage_sync) {
        Ok(s) => s,
        Err(r) => {
            errors.push(ConfigError::key(&at("storage.sync"), "storage.sync", r));
            return (None, None);
        }
    };
    let Some(path) = service
        .storage_path
        .as_deref()
        .map(str::trim)
        .filter(|p| !p.is_empty())
    else {
        if service.storage_keep_rejected {
            notes.push(ConfigError::key(
                &at("storage.keep.rejected"),
                "storage.keep.rejected",
                "accepted but not applied: the dead-letter store needs storage.path",
            ));
        }
        return (None, None);
    };
    let rejected = service.storage_keep_rejected.then(|| {
        (
            service.storage_rejected_path.trim().to_string(),
            service.storage_rejected_limit.map(|b| b.0),
        )
    });
    let settings = StorageSettings {
        path: std::path::PathBuf::from(path),
        sync,
        checksum: service.storage_checksum,
        delete_irrecoverable: service.storage_delete_irrecoverable_chunks,
        rejected: rejected.clone(),
    };
    let storage = match Storage::open(settings) {
        Ok(s) => s,
        Err(e) => {
            errors.push(ConfigError::key(
                &at("storage.path"),
                "storage.path",
                format!("cannot create '{path}': {e}"),
            ));
            return (None, None);
        }
    };
    let dead_letters = match rejected {
        Some((dir, limit)) => {
            let dir_path = std::path::Path::new(path).join(&dir);
            match DeadLetters::open(dir_path, limit, service.storage_checksum, sync) {
                Ok(d) => Some(Arc::new(d)),
                Err(e) => {
                    errors.push(ConfigError::key(
                        &at("storage.rejected.path"),
                        "storage.rejected.path",
                        format!("cannot create '{dir}' under '{path}': {e}"),
                    ));
                    None
                }
            }
        }
        None => None,
    };
    (Some(storage), dead_letters)
}

impl Env<'_> {
    pub(crate) fn context(&self, instance: &str, metrics: &Arc<PluginMetrics>) -> BuildContext {
        BuildContext {
            base_dir: self.base_dir.to_path_buf(),
            instance: instance.to_string(),
            metrics: Arc::clone(metrics),
            config: Arc::clone(self.config),
            parsers: Arc::clone(self.parsers),
            notes: Arc::clone(&self.plugin_notes),
            extra_inputs: Arc::clone(&self.extra_inputs),
        }
    }
}

fn build_input(
    env: &Env<'_>,
    counts: &mut HashMap<&'static str, usize>,
    section: &Section,
    notes: &mut Vec<ConfigError>,
) -> Result<(InputInstance, Option<RouteSpecs>), ConfigError> {
    let name = section_name(section)?;
    let plugin = lookup(env.registry, "input", &env.registry.inputs, section, name)?;
    let (shared, own) = split(section, InputCommon::OPTIONS, plugin.options);
    // The shared keys' and the plugin's own mistakes are reported together.
    let common = InputCommon::from_entries(&section.span, &shared, &[]);
    let alias = common.as_ref().ok().and_then(|c| c.alias.clone());
    let instance = instance_name(counts, "input", plugin.name, alias.as_deref());
    let m = PluginMetrics::new(instance.clone());
    let ctx = env.context(&instance, &m);
    let known: Vec<&'static str> = names(InputCommon::OPTIONS).collect();
    let input = (plugin.build)(&ctx, section, &own).map_err(|e| with_shared_suggestions(e, &known));
    let (common, input) = both(common, input)?;
    notes.extend(not_applied(INPUT_NOT_APPLIED, shared.iter().copied()));
    let filesystem = input_storage(env, section, &common, notes)?;
    if common.storage_pause && !filesystem {
        notes.push(ConfigError::key(
            &span_of(section, "storage.pause_on_chunks_overlimit"),
            "storage.pause_on_chunks_overlimit",
            "accepted but not applied: it applies to storage.type filesystem only",
        ));
    }
    let processors = match section.nested("processors") {
        Some(n) => crate::processors::build(env, section, n, notes)?,
        None => Vec::new(),
    };
    let routes = match section.nested("routes") {
        Some(n) => Some(RouteSpecs::parse(n, notes)?),
        None => None,
    };
    if let Some(t) = section.nested("telemetry") {
        telemetry(t, false, notes)?;
    }
    if let Ok(mut l) = env.metrics.inputs.lock() {
        l.push(Arc::clone(&m));
    }
    let instance = InputInstance {
        plugin_name: plugin.name,
        processors,
        routes: None,
        filesystem,
        pause_on_overlimit: common.storage_pause && filesystem,
        tag: Arc::from(
            common
                .tag
                .filter(|t| !t.is_empty())
                .unwrap_or_else(|| instance.clone()),
        ),
        name: instance,
        mem_buf_limit: common
            .mem_buf_limit
            .map_or(DEFAULT_MEM_BUF_LIMIT, |b| b.0 as usize),
        plugin: input,
        metrics: m,
    };
    Ok((instance, routes))
}

/// Whether an input buffers on disk: its `storage.type`, or with `storage.inherit On` the
/// service's, as Fluent Bit resolves them (`memrb`, a ring buffer that drops its oldest chunks,
/// is taken as `memory`, which pauses instead, and says so).
fn input_storage(
    env: &Env<'_>,
    section: &Section,
    common: &InputCommon,
    notes: &mut Vec<ConfigError>,
) -> Result<bool, ConfigError> {
    let (value, span, key) = match (&common.storage_type, env.service) {
        (Some(t), _) => (t.clone(), span_of(section, "storage.type"), "storage.type"),
        (None, Some(s)) if s.storage_inherit => match &s.storage_type {
            Some(t) => (
                t.clone(),
                service_span_of(env.config, "storage.type", &section.span),
                "storage.type",
            ),
            None => return Ok(false),
        },
        _ => return Ok(false),
    };
    match value.trim().to_ascii_lowercase().as_str() {
        "memory" => Ok(false),
        "memrb" => {
            notes.push(ConfigError::key(
                &span,
                key,
                "'memrb' is accepted but not applied: the input buffers in memory and pauses at Mem_Buf_Limit instead of dropping its oldest chunks",
            ));
            Ok(false)
        }
        "filesystem" => {
            if env.storage.is_none() {
                return Err(ConfigError::key(
                    &span,
                    key,
                    "filesystem storage needs [SERVICE] storage.path",
                ));
            }
            Ok(true)
        }
        other => Err(ConfigError::key(
            &span,
            key,
            format!("expected 'memory', 'filesystem' or 'memrb', got '{other}'"),
        )),
    }
}

fn build_filter(
    env: &Env<'_>,
    counts: &mut HashMap<&'static str, usize>,
    section: &Section,
    notes: &mut Vec<ConfigError>,
) -> Result<Option<FilterInstance>, ConfigError> {
    let name = section_name(section)?;
    let plugin = lookup(env.registry, "filter", &env.registry.filters, section, name)?;
    let (shared, own) = split(section, FilterCommon::OPTIONS, plugin.options);
    // The shared keys' and the plugin's own mistakes are reported together.
    let common = FilterCommon::from_entries(&section.span, &shared, &[]);
    let alias = common.as_ref().ok().and_then(|c| c.alias.clone());
    let instance = instance_name(counts, "filter", plugin.name, alias.as_deref());
    let m = PluginMetrics::new(instance.clone());
    let ctx = env.context(&instance, &m);
    let known: Vec<&'static str> = names(FilterCommon::OPTIONS).collect();
    let filter =
        (plugin.build)(&ctx, section, &own).map_err(|e| with_shared_suggestions(e, &known));
    let (common, filter) = both(common, filter)?;
    notes.extend(not_applied(FILTER_NOT_APPLIED, shared.iter().copied()));
    let Some(matcher) = matcher(
        section,
        common.match_.as_deref(),
        common.match_regex.as_deref(),
    )?
    else {
        // Fluent Bit: "NO match rule for <name> filter instance, unloading."
        notes.push(ConfigError::at(
            &section.span,
            format!("NO match rule for {instance} filter instance, unloading"),
        ));
        return Ok(None);
    };
    if let Ok(mut l) = env.metrics.filters.lock() {
        l.push(Arc::clone(&m));
    }
    Ok(Some(FilterInstance {
        name: instance,
        matcher: Some(matcher),
        condition: None,
        plugin: filter,
        metrics: m,
    }))
}

fn build_output(
    env: &Env<'_>,
    counts: &mut HashMap<&'static str, usize>,
    section: &Section,
    notes: &mut Vec<ConfigError>,
) -> Result<Option<OutputInstance>, ConfigError> {
    let name = section_name(section)?;
    let plugin = lookup(env.registry, "output", &env.registry.outputs, section, name)?;
    let (shared, own) = split(section, OutputCommon::OPTIONS, plugin.options);
    // The shared keys' and the plugin's own mistakes are reported together.
    let common = OutputCommon::from_entries(&section.span, &shared, &[]);
    let alias = common.as_ref().ok().and_then(|c| c.alias.clone());
    let common = common.and_then(|c| {
        let retry_limit = RetryLimit::of(c.retry_limit.as_deref()).map_err(|r| {
            let span = section
                .get("retry_limit")
                .map(|e| e.span.clone())
                .unwrap_or_else(|| section.span.clone());
            ConfigError::key(&span, "Retry_Limit", r)
        })?;
        Ok((c, retry_limit))
    });
    let instance = instance_name(counts, "output", plugin.name, alias.as_deref());
    let m = PluginMetrics::new(instance.clone());
    let ctx = env.context(&instance, &m);
    let known: Vec<&'static str> = names(OutputCommon::OPTIONS).collect();
    let output =
        (plugin.build)(&ctx, section, &own).map_err(|e| with_shared_suggestions(e, &known));
    let ((common, retry_limit), output) = both(common, output)?;
    notes.extend(not_applied(OUTPUT_NOT_APPLIED, shared.iter().copied()));
    // Without a match rule the output is kept until routes are connected: a route may name
    // it ([`connect_routes`] unloads it otherwise).
    let matcher = matcher(
        section,
        common.match_.as_deref(),
        common.match_regex.as_deref(),
    )?;
    let processors = match section.nested("processors") {
        Some(n) => crate::processors::OutputProcessors::new(crate::processors::build(
            env, section, n, notes,
        )?),
        None => None,
    };
    Ok(Some(OutputInstance {
        name: instance,
        plugin_name: plugin.name,
        span: section.span.clone(),
        processors,
        matcher,
        retry_limit,
        workers: common.workers.unwrap_or(plugin.default_workers).max(1),
        plugin: output,
        metrics: m,
        total_limit_size: common.storage_total_limit_size.map(|b| b.0),
    }))
}

/// Both results, or every error of the two.
fn both<A, B>(a: Result<A, ConfigError>, b: Result<B, ConfigError>) -> Result<(A, B), ConfigError> {
    match (a, b) {
        (Ok(a), Ok(b)) => Ok((a, b)),
        (a, b) => Err(ConfigError::many(
            a.err().into_iter().chain(b.err()).collect(),
        )),
    }
}

/// Resolves every input's routes to output indices, then unloads the outputs with no match
/// rule that no route names (Fluent Bit: "NO match rule for <name> output instance,
/// unloading"), and registers the outputs' metrics.
fn connect_routes(
    inputs: &mut [InputInstance],
    outputs: &mut Vec<OutputInstance>,
    specs: Vec<Option<RouteSpecs>>,
    notes: &mut Vec<ConfigError>,
) -> Result<(), ConfigError> {
    // Fluent Bit's find_output_instance: the first output whose alias, instance name or
    // plugin name is the name.
    let find = |outputs: &[OutputInstance], name: &str| {
        outputs
            .iter()
            .position(|o| o.name == name || o.plugin_name == name)
    };
    let used: Vec<bool> = outputs
        .iter()
        .enumerate()
        .map(|(i, o)| {
            o.matcher.is_some()
                || specs
                    .iter()
                    .flatten()
                    .any(|s| s.names().any(|n| find(outputs, n) == Some(i)))
        })
        .collect();
    // Old index -> new index, once the unused outputs are gone.
    let mut remap = vec![None; outputs.len()];
    let mut next = 0;
    for (i, u) in used.iter().enumerate() {
        if *u {
            remap[i] = Some(next);
            next += 1;
        }
    }
    for (input, spec) in inputs.iter_mut().zip(specs) {
        if let Some(spec) = spec {
            let resolved = spec.resolve(|n| find(outputs, n).and_then(|i| remap[i]))?;
            input.routes = Some(resolved);
        }
    }
    let mut kept = Vec::with_capacity(next);
    for (o, u) in std::mem::take(outputs).into_iter().zip(used) {
        if u {
            kept.push(o);
        } else {
            notes.push(ConfigError::at(
                &o.span,
                format!("NO match rule for {} output instance, unloading", o.name),
            ));
        }
    }
    *outputs = kept;
    Ok(())
}

/// The `telemetry` block of the service or of an input: Fluent Bit 5.1's per-tag record
/// counting (`telemetry.metrics.logs.tag_records`). Its keys are checked as Fluent Bit checks
/// them (an unknown key fails); turning it on is noted as not applied.
fn telemetry(
    node: &logferry_core::config::Nested,
    service: bool,
    notes: &mut Vec<ConfigError>,
) -> Result<(), ConfigError> {
    use logferry_core::config::Tree;
    let leaf: &[&str] = if service {
        &["enabled", "max_series", "max_tag_length"]
    } else {
        &["enabled"]
    };
    let mut cur = &node.value;
    let mut span = node.span.clone();
    for level in ["metrics", "logs", "tag_records"] {
        if !matches!(cur, Tree::Map { .. }) {
            return Err(ConfigError::key(
                &span,
                &node.key,
                format!("expected a map, found {}", cur.what()),
            ));
        }
        crate::condition::known_keys(cur, "telemetry", &[level])?;
        match cur.get(level) {
            Some((s, t)) => {
                span = s.clone();
                cur = t;
            }
            None => return Ok(()),
        }
    }
    crate::condition::known_keys(cur, "telemetry.metrics.logs.tag_records", leaf)?;
    for key in ["max_series", "max_tag_length"] {
        if let Some((s, t)) = cur.get(key) {
            let v = crate::condition::scalar(s, key, t)?;
            v.trim()
                .parse::<i32>()
                .map_err(|_| ConfigError::key(s, key, format!("expected an integer, got '{v}'")))?;
        }
    }
    if let Some((s, t)) = cur.get("enabled") {
        let v = crate::condition::scalar(s, "enabled", t)?;
        let on = logferry_core::config::units::parse_bool(v)
            .map_err(|r| ConfigError::key(s, "enabled", r))?;
        if on {
            notes.push(ConfigError::key(
                s,
                "enabled",
                "accepted but not applied: logferry does not count records per tag (fluentbit_input_logs_tag_records_total)",
            ));
        }
    }
    Ok(())
}

/// A `[SERVICE]` section's nested YAML keys (`telemetry`).
fn service_nested(section: &Section, notes: &mut Vec<ConfigError>) -> Result<(), ConfigError> {
    for n in &section.nested {
        telemetry(n, true, notes)?;
    }
    Ok(())
}

/// Plugins suggest among their own keys; a typo of a shared key (`Mem_Buf_Limt`) only shows up
/// here, so offer the shared names too when the plugin found no near miss.
pub(crate) fn with_shared_suggestions(e: ConfigError, shared: &[&'static str]) -> ConfigError {
    match e {
        ConfigError::Many(v) => ConfigError::many(
            v.into_iter()
                .map(|e| with_shared_suggestions(e, shared))
                .collect(),
        ),
        ConfigError::Key { span, key, reason }
            if reason.starts_with("unknown key") && !reason.contains("did you mean") =>
        {
            match suggest(&key, shared.iter().copied()) {
                Some(s) => ConfigError::Key {
                    reason: format!("{reason} (did you mean '{s}'?)"),
                    span,
                    key,
                },
                None => ConfigError::Key { span, key, reason },
            }
        }
        other => other,
    }
}
