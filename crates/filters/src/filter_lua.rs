//! `lua` filter: runs each record through a Lua function (Fluent Bit's `filter_lua`, with
//! `src/flb_lua.c` for the conversions). The engine is LuaJIT, as in Fluent Bit, built from
//! source through `mlua`.
//!
//! Options, as documented: `script` (a file; relative to the working directory, else to the
//! main config file's directory) or `code` (inline source; wins over `script`), `call` (the
//! global function), `protected_mode` (default on), `time_as_table` (default off),
//! `type_int_key` and `type_array_key` (space-separated keys), `enable_flb_null` (default off).
//!
//! The function is called as `call(tag, timestamp, record)` and returns `code, timestamp,
//! record`: `-1` drops the record, `0` keeps it as it was, `1` replaces timestamp and record,
//! `2` replaces the record and keeps the timestamp; a record that is an array of tables splits
//! into one record per table. A function declared with five parameters is called the
//! metadata way, `call(tag, timestamp, group, metadata, record)` returning `code, timestamp,
//! metadata, record` (logferry's records carry no group or metadata: both are passed as empty
//! tables and the metadata returned is not kept).
//!
//! Where the docs are silent this follows Fluent Bit 5.1's code:
//! - the timestamp is a number of seconds (`sec + nsec / 1e9`; a double, so precision below a
//!   microsecond is lost) or, with `time_as_table`, `{sec = ..., nsec = ...}`; a returned
//!   table's `sec` and `nsec` are read as integers (missing: 0), and anything but a table
//!   keeps the original time with an error logged;
//! - the code is read as Lua's `tointeger` reads it (`1.9` is 1, `"2"` is 2, anything else 0);
//!   a code other than -1, 0, 1 or 2 keeps the record with an error logged;
//! - a Lua number that is a whole number becomes an integer, others a float; a key named in
//!   `type_int_key` (at any depth) turns a number into an integer by truncation; a key named in
//!   `type_array_key` turns a table into an array even when it is empty;
//! - maps and arrays of the record stay maps and arrays (each table remembers what it came
//!   from); a table the script made is an array when its largest positive numeric key is a
//!   whole number (`table.maxn`), with the gaps as null, else a map; a key that is a number or
//!   a boolean is written as text, and a value Lua cannot serialize (a function, a coroutine,
//!   userdata) is left out;
//! - a null becomes `nil` (which removes the key from a table) unless `enable_flb_null` is on,
//!   then it is the global `flb_null`, which turns back into null;
//! - `FLB_ENV` is a table of the config's variables (see below).
//!
//! Where logferry differs (docs/configuration.md):
//! - a Lua error, a table that is not a record or an array of records, and a cycle or a table
//!   nested deeper than 128 levels leave *that* record unchanged, with the error logged (at
//!   most once a second, with the number left unlogged) and counted in
//!   `logferry_lua_errors_total`; Fluent Bit passes the whole chunk unchanged, undoing what
//!   the script did to the chunk's earlier records. `protected_mode off` is accepted with a
//!   note: the script always runs protected, as an unprotected error would stop the agent;
//! - the keys of a map come back in the order they had, and the keys the script added after
//!   them in byte order (Lua's tables have no order; Fluent Bit writes them in Lua's hash
//!   order);
//! - a key named in `type_int_key`/`type_array_key` must match exactly (Fluent Bit compares
//!   only the record key's length, so `type_int_key status_code` also converts `status`);
//! - the Lua state has the safe standard libraries (no `debug`, no `ffi`, no C modules);
//! - `FLB_ENV` has `HOSTNAME` only: logferry's config keeps no table of its `@SET`/`env`
//!   variables after expanding them;
//! - a Lua string that is not UTF-8 is written with U+FFFD in place of the invalid bytes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use logferry_core::config::{ConfigError, Entry, Section, Span};
use logferry_core::{options, EventTime, Map, Record, Str, Value};
use logferry_engine::{BuildContext, Filter, FilterPlugin};
use mlua::{Function, Lua, MultiValue, Table, Value as LuaValue};

options! {
    /// Options of the `lua` filter.
    pub struct LuaOptions for "lua filter" {
        /// Path of the Lua script (relative: to the working directory, else to the config file's).
        pub script: Option<String> = ["script"] None,
        /// Inline Lua source, used instead of `script`.
        pub code: Option<String> = ["code"] None,
        /// Name of the global Lua function called for each record.
        pub call: String = ["call"] None,
        /// Space-separated keys whose numbers are turned into integers.
        pub type_int_key: Option<String> = ["type_int_key"] None,
        /// Space-separated keys whose tables are turned into arrays (even when empty).
        pub type_array_key: Option<String> = ["type_array_key"] None,
        /// Run the function protected (logferry always does; `off` is accepted with a note).
        pub protected_mode: bool = ["protected_mode"] Some("true"),
        /// Pass the timestamp as `{sec = ..., nsec = ...}` instead of a number of seconds.
        pub time_as_table: bool = ["time_as_table"] Some("false"),
        /// Pass nulls as the global `flb_null` instead of `nil`, so keys holding null stay.
        pub enable_flb_null: bool = ["enable_flb_null"] Some("false"),
    }
}

/// The registry entry.
pub static PLUGIN: FilterPlugin = FilterPlugin {
    name: "lua",
    aliases: &[],
    description: "Lua Scripting Filter",
    options: LuaOptions::OPTIONS,
    default_workers: 0,
    build,
};

/// Deepest nesting converted either way; deeper (or a table that contains itself) is an error.
const MAX_DEPTH: usize = 128;
/// The longest array a script-made table becomes (`{[1e9] = 1}` is a map, not a billion nulls).
const MAX_SPARSE_ARRAY: f64 = (1 << 20) as f64;
/// Errors are logged at most this often; the others are counted.
const LOG_EVERY: Duration = Duration::from_secs(1);

/// Name of the chunk inline `code` is loaded as (Fluent Bit's).
const INLINE_CHUNK: &str = "fluentbit.lua";

fn build(
    ctx: &BuildContext,
    section: &Section,
    entries: &[&Entry],
) -> Result<Box<dyn Filter>, ConfigError> {
    let o = LuaOptions::from_entries(&section.span, entries, &[])?;
    let entry = |name: &str| {
        entries
            .iter()
            .rev()
            .find(|e| e.key.eq_ignore_ascii_case(name))
            .copied()
    };
    let span_of = |name: &str| entry(name).map_or(section.span.clone(), |e| e.span.clone());

    let (source, chunk_name, source_key): (Vec<u8>, String, &str) = match (&o.code, &o.script) {
        (Some(code), script) => {
            if let (Some(_), Some(e)) = (script, entry("script")) {
                ctx.note(e, "not read: 'code' is set and wins, as in Fluent Bit");
            }
            (code.as_bytes().to_vec(), INLINE_CHUNK.to_string(), "code")
        }
        (None, Some(script)) => {
            let path = script_path(&ctx.base_dir, script.trim());
            let text = std::fs::read(&path).map_err(|e| {
                ConfigError::key(
                    &span_of("script"),
                    "script",
                    format!("cannot access script '{}': {e}", path.display()),
                )
            })?;
            (text, path.display().to_string(), "script")
        }
        (None, None) => {
            return Err(ConfigError::key(
                &section.span,
                "script",
                "no script path defined: set 'script' (a file) or 'code' (inline Lua)",
            ))
        }
    };
    if !o.protected_mode {
        if let Some(e) = entry("protected_mode") {
            ctx.note(
                e,
                "logferry always runs the script protected: an error leaves the record unchanged \
                 and is logged, where Fluent Bit would stop",
            );
        }
    }

    let lua = Lua::new();
    let fail = |key: &str, span: &Span, what: String| ConfigError::key(span, key, what);
    let lua_err = |e: mlua::Error| first_line(&e.to_string());
    set_env_table(&lua).map_err(|e| fail(source_key, &span_of(source_key), lua_err(e)))?;
    if o.enable_flb_null {
        lua.globals()
            .raw_set("flb_null", LuaValue::NULL)
            .map_err(|e| fail(source_key, &span_of(source_key), lua_err(e)))?;
    }
    lua.load(source)
        .set_name(format!("@{chunk_name}"))
        .exec()
        .map_err(|e| {
            fail(
                source_key,
                &span_of(source_key),
                format!("invalid lua content: {}", lua_err(e)),
            )
        })?;
    let call = o.call.trim().to_string();
    let func = match lua.globals().raw_get::<LuaValue>(call.as_str()) {
        Ok(LuaValue::Function(f)) => f,
        _ => {
            return Err(ConfigError::key(
                &span_of("call"),
                "call",
                format!("function {call} is not found in the script"),
            ))
        }
    };
    let five_args = param_count(&lua, &func) >= 5;
    let keys = |v: &Option<String>| -> Vec<Str> {
        v.as_deref()
            .unwrap_or("")
            .split(' ')
            .filter(|k| !k.is_empty())
            .map(Str::from)
            .collect()
    };
    let mk_marker = || -> Result<Table, ConfigError> {
        lua.create_table()
            .map_err(|e| fail(source_key, &span_of(source_key), lua_err(e)))
    };
    let map_mt = mk_marker()?;
    let array_mt = mk_marker()?;
    Ok(Box::new(LuaFilter {
        func,
        call,
        five_args,
        time_as_table: o.time_as_table,
        flb_null: o.enable_flb_null,
        int_keys: keys(&o.type_int_key),
        array_keys: keys(&o.type_array_key),
        map_mt,
        array_mt,
        instance: ctx.instance.clone(),
        errors: ctx.metrics.register(
            "lua_errors",
            "Records the lua filter passed on unchanged after a Lua error or an invalid return.",
        ),
        last_log: None,
        unlogged: 0,
        lua,
    }))
}

/// Where `script` is read from: as written when it exists (relative to the working
/// directory) or is absolute, else relative to the main config file's directory.
fn script_path(base_dir: &Path, script: &str) -> PathBuf {
    let p = Path::new(script);
    if p.is_absolute() || p.exists() {
        p.to_path_buf()
    } else {
        base_dir.join(p)
    }
}

/// `FLB_ENV`: the variables a script may read.
fn set_env_table(lua: &Lua) -> mlua::Result<()> {
    let env = lua.create_table()?;
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        });
    if let Some(h) = host {
        env.raw_set("HOSTNAME", h)?;
    }
    lua.globals().raw_set("FLB_ENV", env)
}

/// How many parameters a Lua function declares (LuaJIT's `jit.util.funcinfo`; 3 when it
/// cannot tell), which picks the classic or the metadata calling convention.
fn param_count(lua: &Lua, func: &Function) -> usize {
    let probe = lua
        .load(
            "local f = ...\n\
             local ok, ju = pcall(require, 'jit.util')\n\
             if ok and type(ju) == 'table' and ju.funcinfo then\n\
               local info = ju.funcinfo(f)\n\
               if info and info.params then return info.params end\n\
             end\n\
             return 3",
        )
        .set_name("=param_count")
        .into_function();
    probe
        .and_then(|p| p.call::<i64>(func.clone()))
        .map_or(3, |n| usize::try_from(n).unwrap_or(3))
}

/// The first line of a Lua error (mlua appends a stack traceback).
fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").trim().to_string()
}

/// What the function said to do with one record.
enum Outcome {
    Keep,
    Drop,
    Replace(Vec<Record>),
}

/// The filter. `mlua`'s `send` feature makes the Lua state `Send`, so the filter can move
/// between the runtime's threads; the engine calls it from one task at a time (`&mut self`).
pub struct LuaFilter {
    lua: Lua,
    func: Function,
    call: String,
    five_args: bool,
    time_as_table: bool,
    flb_null: bool,
    int_keys: Vec<Str>,
    array_keys: Vec<Str>,
    /// Metatables marking tables made from maps and from arrays.
    map_mt: Table,
    array_mt: Table,
    instance: String,
    errors: Arc<AtomicU64>,
    last_log: Option<Instant>,
    unlogged: u64,
}

/// Maps of the record being processed, by the address of the Lua table made from them: their
/// key order is the order the table's keys come back in.
type Origins<'a> = HashMap<usize, &'a Map>;

impl LuaFilter {
    /// Counts and (at most once per [`LOG_EVERY`]) logs an error.
    fn report(&mut self, msg: &str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        if self
            .last_log
            .is_some_and(|t| now.duration_since(t) < LOG_EVERY)
        {
            self.unlogged += 1;
            return;
        }
        tracing::error!(
            filter = %self.instance,
            unlogged_since_last = self.unlogged,
            "lua: {msg}"
        );
        self.last_log = Some(now);
        self.unlogged = 0;
    }

    /// Runs the function on one record.
    fn process(&mut self, tag: &str, rec: &Record) -> Result<Outcome, String> {
        let mut origins = Origins::new();
        let body = self
            .map_to_lua(&rec.body, &mut origins, 0)
            .map_err(|e| format!("cannot pass the record to Lua: {e}"))?;
        let ts = if self.time_as_table {
            let t = self.lua.create_table().map_err(|e| e.to_string())?;
            t.raw_set("sec", rec.time.secs())
                .map_err(|e| e.to_string())?;
            t.raw_set("nsec", i64::from(rec.time.subsec_nanos()))
                .map_err(|e| e.to_string())?;
            LuaValue::Table(t)
        } else {
            LuaValue::Number(rec.time.as_f64())
        };
        let ret = if self.five_args {
            let group = self.lua.create_table().map_err(|e| e.to_string())?;
            let meta = self.lua.create_table().map_err(|e| e.to_string())?;
            self.func
                .call::<MultiValue>((tag, ts, group, meta, LuaValue::Table(body)))
        } else {
            self.func
                .call::<MultiValue>((tag, ts, LuaValue::Table(body)))
        }
        .map_err(|e| {
            format!(
                "error calling {}(): {}",
                self.call,
                first_line(&e.to_string())
            )
        })?;

        let mut ret = ret.into_iter();
        let code = to_integer(&ret.next().unwrap_or(LuaValue::Nil));
        let ts_v = ret.next().unwrap_or(LuaValue::Nil);
        if self.five_args {
            // The metadata: logferry's records have none to replace.
            let _ = ret.next();
        }
        let rec_v = ret.next().unwrap_or(LuaValue::Nil);
        let time = match code {
            -1 => return Ok(Outcome::Drop),
            1 | 2 => {
                if code == 2 {
                    rec.time
                } else if self.time_as_table {
                    match &ts_v {
                        LuaValue::Table(t) => {
                            let sec = to_integer(&t.raw_get("sec").unwrap_or(LuaValue::Nil));
                            let nsec = to_integer(&t.raw_get("nsec").unwrap_or(LuaValue::Nil));
                            EventTime(sec.saturating_mul(1_000_000_000).saturating_add(nsec))
                        }
                        _ => {
                            self.report(
                                "invalid lua timestamp type returned; the record keeps its time",
                            );
                            rec.time
                        }
                    }
                } else {
                    time_from_double(to_number(&ts_v))
                }
            }
            0 => return Ok(Outcome::Keep),
            other => return Err(format!("unexpected Lua script return code {other}")),
        };
        let invalid = || format!("invalid table returned at {}()", self.call);
        let LuaValue::Table(t) = rec_v else {
            return Err(invalid());
        };
        match self.shape(&t).map_err(|e| format!("{}: {e}", invalid()))? {
            Shape::Map => {
                let body = self.table_to_map(&t, &origins, 0)?;
                Ok(Outcome::Replace(vec![Record::new(time, body)]))
            }
            Shape::Array(len) => {
                let mut out = Vec::with_capacity(len);
                for i in 1..=len {
                    let item: LuaValue = t.raw_get(i).map_err(|e| e.to_string())?;
                    let LuaValue::Table(item) = item else {
                        return Err(invalid());
                    };
                    if !matches!(self.shape(&item).map_err(|e| e.to_string())?, Shape::Map) {
                        return Err(invalid());
                    }
                    out.push(Record::new(time, self.table_to_map(&item, &origins, 0)?));
                }
                Ok(Outcome::Replace(out))
            }
        }
    }

    fn map_to_lua<'a>(
        &self,
        m: &'a Map,
        origins: &mut Origins<'a>,
        depth: usize,
    ) -> Result<Table, String> {
        if depth > MAX_DEPTH {
            return Err(format!("nested deeper than {MAX_DEPTH} levels"));
        }
        let e = |e: mlua::Error| e.to_string();
        let t = self.lua.create_table_with_capacity(0, m.len()).map_err(e)?;
        for (k, v) in m.iter() {
            let v = self.value_to_lua(v, origins, depth + 1)?;
            t.raw_set(k.as_str(), v).map_err(e)?;
        }
        t.set_metatable(Some(self.map_mt.clone())).map_err(e)?;
        origins.insert(t.to_pointer() as usize, m);
        Ok(t)
    }

    fn value_to_lua<'a>(
        &self,
        v: &'a Value,
        origins: &mut Origins<'a>,
        depth: usize,
    ) -> Result<LuaValue, String> {
        let e = |e: mlua::Error| e.to_string();
        Ok(match v {
            Value::Null if self.flb_null => LuaValue::NULL,
            Value::Null => LuaValue::Nil,
            Value::Bool(b) => LuaValue::Boolean(*b),
            Value::Int(i) => LuaValue::Integer(*i),
            Value::UInt(u) => match i64::try_from(*u) {
                Ok(i) => LuaValue::Integer(i),
                Err(_) => LuaValue::Number(*u as f64),
            },
            Value::Float(f) => LuaValue::Number(*f),
            Value::Str(s) => LuaValue::String(self.lua.create_string(s.as_bytes()).map_err(e)?),
            Value::Map(m) => LuaValue::Table(self.map_to_lua(m, origins, depth)?),
            Value::SharedMap(m) => LuaValue::Table(self.map_to_lua(m, origins, depth)?),
            Value::Array(a) => {
                if depth > MAX_DEPTH {
                    return Err(format!("nested deeper than {MAX_DEPTH} levels"));
                }
                let t = self.lua.create_table_with_capacity(a.len(), 0).map_err(e)?;
                for (i, item) in a.iter().enumerate() {
                    let item = self.value_to_lua(item, origins, depth + 1)?;
                    t.raw_set(i + 1, item).map_err(e)?;
                }
                t.set_metatable(Some(self.array_mt.clone())).map_err(e)?;
                LuaValue::Table(t)
            }
        })
    }

    /// Whether a table becomes a map or an array (and how long).
    fn shape(&self, t: &Table) -> mlua::Result<Shape> {
        if let Some(mt) = t.metatable() {
            if mt.to_pointer() == self.array_mt.to_pointer() {
                return Ok(Shape::Array(t.raw_len()));
            }
            if mt.to_pointer() == self.map_mt.to_pointer() {
                return Ok(Shape::Map);
            }
        }
        // A table the script made: `table.maxn`, the largest positive numeric key.
        let mut max = 0.0f64;
        for pair in t.pairs::<LuaValue, LuaValue>() {
            let (k, _) = pair?;
            match k {
                LuaValue::Integer(i) if i > 0 => max = max.max(i as f64),
                LuaValue::Number(n) if n > 0.0 => max = max.max(n),
                _ => {}
            }
        }
        if max >= 1.0 && max.fract() == 0.0 && max <= MAX_SPARSE_ARRAY {
            Ok(Shape::Array(max as usize))
        } else {
            Ok(Shape::Map)
        }
    }

    fn table_to_map(&self, t: &Table, origins: &Origins<'_>, depth: usize) -> Result<Map, String> {
        if depth > MAX_DEPTH {
            return Err(format!(
                "a table nested deeper than {MAX_DEPTH} levels (or containing itself) was returned"
            ));
        }
        let orig = origins.get(&(t.to_pointer() as usize)).copied();
        let mut pairs: Vec<(usize, Str, Value)> = Vec::new();
        for pair in t.pairs::<LuaValue, LuaValue>() {
            let (k, v) = pair.map_err(|e| e.to_string())?;
            let Some(key) = key_text(&k) else { continue };
            let value = if let Some(conv) = self.typed(&key, &v, origins, depth)? {
                conv
            } else {
                match self.value_from_lua(v, origins, depth + 1)? {
                    Some(v) => v,
                    None => continue,
                }
            };
            let rank = orig
                .and_then(|m| m.position(key.as_str()))
                .unwrap_or(usize::MAX);
            pairs.push((rank, key, value));
        }
        pairs.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        Ok(pairs.into_iter().map(|(_, k, v)| (k, v)).collect())
    }

    /// `type_int_key` / `type_array_key` conversions of the value under `key`.
    fn typed(
        &self,
        key: &str,
        v: &LuaValue,
        origins: &Origins<'_>,
        depth: usize,
    ) -> Result<Option<Value>, String> {
        match v {
            LuaValue::Integer(i) if self.int_keys.iter().any(|k| k == key) => {
                Ok(Some(Value::Int(*i)))
            }
            LuaValue::Number(n) if self.int_keys.iter().any(|k| k == key) => {
                Ok(Some(Value::Int(*n as i64)))
            }
            LuaValue::Table(t) if self.array_keys.iter().any(|k| k == key) => self
                .array_from(t, t.raw_len(), origins, depth + 1)
                .map(Some),
            _ => Ok(None),
        }
    }

    fn array_from(
        &self,
        t: &Table,
        len: usize,
        origins: &Origins<'_>,
        depth: usize,
    ) -> Result<Value, String> {
        if depth > MAX_DEPTH {
            return Err(format!(
                "a table nested deeper than {MAX_DEPTH} levels (or containing itself) was returned"
            ));
        }
        let mut out = Vec::with_capacity(len);
        for i in 1..=len {
            let item: LuaValue = t.raw_get(i).map_err(|e| e.to_string())?;
            out.push(
                self.value_from_lua(item, origins, depth + 1)?
                    .unwrap_or(Value::Null),
            );
        }
        Ok(Value::Array(out))
    }

    /// A Lua value as a record value; `None` for what Lua cannot serialize.
    fn value_from_lua(
        &self,
        v: LuaValue,
        origins: &Origins<'_>,
        depth: usize,
    ) -> Result<Option<Value>, String> {
        Ok(Some(match v {
            LuaValue::Nil => Value::Null,
            LuaValue::Boolean(b) => Value::Bool(b),
            LuaValue::Integer(i) => Value::Int(i),
            LuaValue::Number(n) => number(n),
            LuaValue::String(s) => Value::Str(Str::from(s.to_string_lossy())),
            LuaValue::LightUserData(p) if p.0.is_null() => Value::Null,
            LuaValue::Table(t) => match self.shape(&t).map_err(|e| e.to_string())? {
                Shape::Map => Value::Map(self.table_to_map(&t, origins, depth)?),
                Shape::Array(len) => self.array_from(&t, len, origins, depth)?,
            },
            _ => return Ok(None),
        }))
    }
}

/// Map or array (with its length).
enum Shape {
    Map,
    Array(usize),
}

/// A Lua number as Fluent Bit packs it: an integer when it is a whole number.
fn number(n: f64) -> Value {
    if n.is_finite() && n.fract() == 0.0 && n >= i64::MIN as f64 && n < i64::MAX as f64 {
        Value::Int(n as i64)
    } else {
        Value::Float(n)
    }
}

/// A map key as text: strings as they are, numbers and booleans written out.
fn key_text(k: &LuaValue) -> Option<Str> {
    Some(match k {
        LuaValue::String(s) => Str::from(s.to_string_lossy()),
        LuaValue::Integer(i) => Str::from(i.to_string()),
        LuaValue::Number(n) => match number(*n) {
            Value::Int(i) => Str::from(i.to_string()),
            _ => Str::from(n.to_string()),
        },
        LuaValue::Boolean(b) => Str::from(if *b { "true" } else { "false" }),
        _ => return None,
    })
}

/// Lua's `tointeger`: numbers truncated, numeric strings parsed, anything else 0.
fn to_integer(v: &LuaValue) -> i64 {
    let n = to_number(v);
    if n.is_finite() {
        n.trunc() as i64
    } else {
        0
    }
}

/// Lua's `tonumber` as the C API reads it: numbers, numeric strings, anything else 0.
fn to_number(v: &LuaValue) -> f64 {
    match v {
        LuaValue::Integer(i) => *i as f64,
        LuaValue::Number(n) => *n,
        LuaValue::String(s) => s
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<f64>().ok())
            .unwrap_or(0.0),
        _ => 0.0,
    }
}

/// Fluent Bit's `flb_time_from_double`: whole seconds, and the fraction as nanoseconds.
fn time_from_double(d: f64) -> EventTime {
    if !d.is_finite() {
        return EventTime(0);
    }
    let sec = d.trunc() as i64;
    let nsec = ((d - d.trunc()) * 1e9) as i64;
    EventTime(sec.saturating_mul(1_000_000_000).saturating_add(nsec))
}

#[async_trait]
impl Filter for LuaFilter {
    async fn filter(&mut self, tag: &str, records: &mut Vec<Record>) {
        let input = std::mem::take(records);
        records.reserve(input.len());
        for rec in input {
            match self.process(tag, &rec) {
                Ok(Outcome::Keep) => records.push(rec),
                Ok(Outcome::Drop) => {}
                Ok(Outcome::Replace(new)) => records.extend(new),
                Err(msg) => {
                    self.report(&format!("{msg}; the record is passed on unchanged"));
                    records.push(rec);
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::Path;

    use logferry_core::config::{Config, Entry, Section, SectionKind};
    use logferry_core::{EventTime, Record, Value};
    use logferry_engine::{BuildContext, Filter};

    use super::PLUGIN;
    use crate::testing::{check, check_err, records, span};

    /// A script in the fixtures directory.
    fn fixture(name: &str) -> String {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/lua")
            .join(name)
            .display()
            .to_string()
    }

    /// Builds with a context the test keeps (to read the filter's counters and notes).
    fn build_ctx(entries: &[(&str, &str)]) -> (Box<dyn Filter>, BuildContext) {
        let mut section = Section::new(SectionKind::Filter, span(1));
        for (i, (k, v)) in entries.iter().enumerate() {
            section.push(*k, *v, span(i as u32 + 2));
        }
        let ctx = BuildContext::standalone("lua.0", Config::default()).unwrap();
        let refs: Vec<&Entry> = section.entries.iter().collect();
        let f = (PLUGIN.build)(&ctx, &section, &refs).unwrap_or_else(|e| panic!("{e}"));
        (f, ctx)
    }

    fn errors(ctx: &BuildContext) -> u64 {
        ctx.metrics
            .extras()
            .iter()
            .find(|e| e.name == "lua_errors")
            .map(|e| e.value.load(std::sync::atomic::Ordering::Relaxed))
            .unwrap()
    }

    /// Runs the filter and returns the records (time and JSON body), timestamps included.
    fn run_timed(f: &mut dyn Filter, recs: Vec<Record>) -> Vec<(EventTime, String)> {
        let mut recs = recs;
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(f.filter("app.log", &mut recs));
        recs.into_iter()
            .map(|r| {
                let body = serde_json::to_string(&Value::Map(r.body)).unwrap();
                (r.time, body)
            })
            .collect()
    }

    fn script(name: &str, call: &str) -> Vec<(&'static str, String)> {
        vec![("script", fixture(name)), ("call", call.to_string())]
    }

    fn refs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
        v.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }

    #[test]
    fn code_1_adds_a_key_after_the_records_own_in_their_order() {
        let e = script("append_tag.lua", "append_tag");
        check(
            &PLUGIN,
            &refs(&e),
            r#"[{"z":1,"a":"x","m":{"y":1,"b":2}}]"#,
            r#"[{"z":1,"a":"x","m":{"y":1,"b":2},"tag":"test.tag"}]"#,
        );
    }

    #[test]
    fn inline_code_as_the_docs_write_it_on_one_line() {
        check(
            &PLUGIN,
            &[
                ("call", "append_tag"),
                (
                    "code",
                    r#"function append_tag(tag, timestamp, record) new_record = record new_record["tag"] = tag return 1, timestamp, new_record end"#,
                ),
            ],
            r#"{"log":"hi"}"#,
            r#"{"log":"hi","tag":"test.tag"}"#,
        );
    }

    #[test]
    fn code_wins_over_script_with_a_note() {
        let (mut f, ctx) = build_ctx(&[
            ("script", "/nonexistent/never-read.lua"),
            ("call", "cb"),
            ("code", "function cb(t, ts, r) r.k = 1 return 2, ts, r end"),
        ]);
        let out = run_timed(f.as_mut(), records(r#"{"a":1}"#));
        assert_eq!(out[0].1, r#"{"a":1,"k":1}"#);
        let notes = ctx.notes.lock().unwrap();
        assert!(notes
            .iter()
            .any(|n| n.to_string().contains("'code' is set")));
    }

    #[test]
    fn minus_one_drops_and_zero_keeps_as_in_the_docs_response_code_example() {
        let e = script("response_code_filter.lua", "cb_response_code_filter");
        check(
            &PLUGIN,
            &refs(&e),
            r#"[{"response_code":200,"n":1},{"response_code":404,"n":2},{"n":3},
                {"response_code":0,"n":4},{"response_code":"","n":5},{"response_code":399,"n":6}]"#,
            r#"[{"response_code":404,"n":2},{"n":3},{"response_code":0,"n":4},{"response_code":"","n":5}]"#,
        );
    }

    #[test]
    fn an_array_of_records_splits_as_in_the_docs_example() {
        let e = script("split.lua", "cb_split");
        check(
            &PLUGIN,
            &refs(&e),
            r#"[{"x": [ {"a1":"aa", "z1":"zz"}, {"b1":"bb", "x1":"xx"}, {"c1":"cc"} ]},
                {"a3":"aa", "z3":"zz", "b3":"bb", "x3":"xx", "c3":"cc"}]"#,
            r#"[{"a1":"aa","z1":"zz"},{"b1":"bb","x1":"xx"},{"c1":"cc"},
                {"a3":"aa","z3":"zz","b3":"bb","x3":"xx","c3":"cc"}]"#,
        );
        // Records made by the script: each with the record's time.
        let (mut f, _) = build_ctx(&refs(&script("cases.lua", "cb_fan_out")));
        let input = records(r#"{"log":"l"}"#);
        let t = input[0].time;
        let out = run_timed(f.as_mut(), input);
        assert_eq!(
            out,
            vec![
                (t, r#"{"log":"l","n":1}"#.to_string()),
                (t, r#"{"log":"l","n":2}"#.to_string()),
                (t, r#"{"log":"l","n":3}"#.to_string()),
            ]
        );
        // An empty array of records drops the record.
        check(&PLUGIN, &refs(&e), r#"{"x":[]}"#, "[]");
    }

    #[test]
    fn code_1_takes_the_new_timestamp_and_code_2_keeps_the_old() {
        let (mut f, _) = build_ctx(&refs(&script("cases.lua", "cb_shift")));
        let input = vec![Record::new(
            EventTime::from_parts(1_700_000_000, 250_000_000),
            records(r#"{"a":1}"#)[0].body.clone(),
        )];
        let out = run_timed(f.as_mut(), input);
        assert_eq!(out[0].1, r#"{"a":1,"shifted":true}"#);
        // 1700000000.25 + 100.5 as a double: whole seconds exact, the fraction to the µs.
        assert_eq!(out[0].0.secs(), 1_700_000_100);
        assert!((out[0].0.subsec_nanos() as i64 - 750_000_000).abs() < 1_000);

        let (mut f, _) = build_ctx(&refs(&script("cases.lua", "cb_keep_time")));
        let input = records(r#"{"a":1,"drop_me":2}"#);
        let t = input[0].time;
        let out = run_timed(f.as_mut(), input);
        assert_eq!(out, vec![(t, r#"{"a":1,"seen":"yes"}"#.to_string())]);
    }

    #[test]
    fn time_as_table_passes_and_takes_exact_nanoseconds() {
        let mut e = script("cases.lua", "cb_time_table");
        e.push(("time_as_table", "on".to_string()));
        let (mut f, ctx) = build_ctx(&refs(&e));
        let t = EventTime::from_parts(1_700_000_000, 123_456_789);
        let out = run_timed(
            f.as_mut(),
            vec![Record::new(t, records(r#"{"a":1}"#)[0].body.clone())],
        );
        assert_eq!(out[0].1, r#"{"a":1,"nsec":123456789,"sec":1700000000}"#);
        assert_eq!(out[0].0, EventTime::from_parts(1_700_000_000, 123_456_790));

        // A number where a table is expected: the time stays, the error is counted.
        let mut e = script("cases.lua", "cb_time_number");
        e.push(("time_as_table", "on".to_string()));
        let (mut f2, ctx2) = build_ctx(&refs(&e));
        let out = run_timed(
            f2.as_mut(),
            vec![Record::new(t, records(r#"{"a":1}"#)[0].body.clone())],
        );
        assert_eq!(out, vec![(t, r#"{"a":1}"#.to_string())]);
        assert_eq!(errors(&ctx2), 1);
        assert_eq!(errors(&ctx), 0);
    }

    #[test]
    fn whole_numbers_become_integers_and_type_int_key_truncates() {
        let e = script("cases.lua", "cb_numbers");
        check(
            &PLUGIN,
            &refs(&e),
            r#"{"big":9007199254740993,"i":7,"f":1.5}"#,
            // LuaJIT's numbers are doubles: 2^53 + 1 comes back as 2^53 (as in Fluent Bit).
            r#"{"big":9007199254740992,"i":7,"f":1.5,"half":2.5,"n":3.7,"whole":5}"#,
        );
        let mut e = script("cases.lua", "cb_numbers");
        e.push(("type_int_key", "n  half".to_string()));
        check(
            &PLUGIN,
            &refs(&e),
            r#"{"i":7,"f":1.5}"#,
            r#"{"i":7,"f":1.5,"half":2,"n":3,"whole":5}"#,
        );
        // A key is matched exactly: `nn` does not convert `n`.
        let mut e = script("cases.lua", "cb_numbers");
        e.push(("type_int_key", "nn".to_string()));
        check(
            &PLUGIN,
            &refs(&e),
            r#"{}"#,
            r#"{"half":2.5,"n":3.7,"whole":5}"#,
        );
    }

    #[test]
    fn tables_keep_their_kind_and_new_tables_are_arrays_or_maps_by_their_keys() {
        let e = script("cases.lua", "cb_tables");
        check(
            &PLUGIN,
            &refs(&e),
            r#"{"arr":["x","y"],"obj":{"1":"one"},"earr":[]}"#,
            r#"{"arr":["changed","y"],"obj":{"1":"one"},"earr":[],
                "empty":{},"empty_list":{},"gap":["a",null,"c"],"list":["a","b","c"],
                "map":{"k":"v"},"numkeys":{"-1":"neg","0":"zero"}}"#,
        );
        let mut e = script("cases.lua", "cb_tables");
        e.push(("type_array_key", "empty_list".to_string()));
        check(
            &PLUGIN,
            &refs(&e),
            r#"{"arr":[1]}"#,
            r#"{"arr":["changed"],"empty":{},"empty_list":[],"gap":["a",null,"c"],
                "list":["a","b","c"],"map":{"k":"v"},"numkeys":{"-1":"neg","0":"zero"}}"#,
        );
    }

    #[test]
    fn nulls_are_removed_unless_enable_flb_null() {
        let e = script("cases.lua", "cb_same");
        check(
            &PLUGIN,
            &refs(&e),
            r#"{"a":null,"b":1,"c":[1,null,3],"d":{"e":null}}"#,
            r#"{"b":1,"c":[1,null,3],"d":{}}"#,
        );
        let mut e = script("cases.lua", "cb_same");
        e.push(("enable_flb_null", "true".to_string()));
        check(
            &PLUGIN,
            &refs(&e),
            r#"{"a":null,"b":1,"c":[1,null,3],"d":{"e":null}}"#,
            r#"{"a":null,"b":1,"c":[1,null,3],"d":{"e":null}}"#,
        );
    }

    #[test]
    fn a_lua_error_passes_that_record_unchanged_and_is_counted() {
        let (mut f, ctx) = build_ctx(&refs(&script("cases.lua", "cb_error")));
        let out = run_timed(
            f.as_mut(),
            records(r#"[{"id":"1"},{"id":"2","fail":true},{"id":"3"}]"#),
        );
        let bodies: Vec<&str> = out.iter().map(|(_, b)| b.as_str()).collect();
        assert_eq!(
            bodies,
            [
                r#"{"id":"1","ok":true}"#,
                r#"{"id":"2","fail":true}"#,
                r#"{"id":"3","ok":true}"#
            ]
        );
        assert_eq!(errors(&ctx), 1);
    }

    #[test]
    fn invalid_returns_and_codes_keep_the_record() {
        for call in ["cb_bad_return", "cb_bad_array", "cb_code3", "cb_cycle"] {
            let (mut f, ctx) = build_ctx(&refs(&script("cases.lua", call)));
            let out = run_timed(f.as_mut(), records(r#"[{"a":1},{"b":2}]"#));
            let bodies: Vec<&str> = out.iter().map(|(_, b)| b.as_str()).collect();
            assert_eq!(bodies, [r#"{"a":1}"#, r#"{"b":2}"#], "{call}");
            assert_eq!(errors(&ctx), 2, "{call}");
        }
        // A code written as a numeric string is read as Lua's tointeger reads it.
        check(
            &PLUGIN,
            &refs(&script("cases.lua", "cb_code_string")),
            r#"{"a":1}"#,
            r#"{"a":1,"changed":true}"#,
        );
    }

    #[test]
    fn a_five_parameter_function_gets_group_and_metadata_tables() {
        check(
            &PLUGIN,
            &refs(&script("cases.lua", "cb_meta")),
            r#"{"a":1}"#,
            r#"{"a":1,"group_is_table":true,"metadata_is_table":true}"#,
        );
    }

    #[test]
    fn flb_env_and_the_tag_are_there() {
        check(
            &PLUGIN,
            &refs(&script("cases.lua", "cb_env")),
            r#"{"a":1}"#,
            r#"{"a":1,"has_hostname":true,"tag":"test.tag"}"#,
        );
    }

    #[test]
    fn protected_mode_off_is_noted_and_errors_are_still_caught() {
        let mut e = script("cases.lua", "cb_error");
        e.push(("protected_mode", "off".to_string()));
        let (mut f, ctx) = build_ctx(&refs(&e));
        let out = run_timed(f.as_mut(), records(r#"{"id":"1","fail":true}"#));
        assert_eq!(out[0].1, r#"{"id":"1","fail":true}"#);
        assert_eq!(errors(&ctx), 1);
        let notes = ctx.notes.lock().unwrap();
        assert!(notes
            .iter()
            .any(|n| n.to_string().starts_with("test.conf:4: protected_mode:")));
    }

    #[test]
    fn config_errors_name_the_key_and_the_file() {
        let missing = "/nonexistent/dir/missing.lua";
        check_err(
            &PLUGIN,
            &[("script", missing), ("call", "f")],
            2,
            "script",
            "cannot access script '/nonexistent/dir/missing.lua'",
        );
        let bad = fixture("syntax_error.lua");
        check_err(
            &PLUGIN,
            &[("call", "broken"), ("script", &bad)],
            3,
            "script",
            "invalid lua content",
        );
        check_err(
            &PLUGIN,
            &[("script", &fixture("split.lua")), ("call", "nope")],
            3,
            "call",
            "function nope is not found",
        );
        check_err(
            &PLUGIN,
            &[("call", "f")],
            1,
            "script",
            "no script path defined",
        );
        check_err(
            &PLUGIN,
            &[("code", "error('at load')"), ("call", "f")],
            2,
            "code",
            "at load",
        );
        let e = crate::testing::build_err(&PLUGIN, &[("script", &fixture("split.lua"))]);
        assert!(e.contains("call"), "{e}");
    }

    #[test]
    fn a_relative_script_is_found_beside_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("beside.lua"),
            "function f(t, ts, r) r.found = true return 2, ts, r end",
        )
        .unwrap();
        let got = super::script_path(dir.path(), "beside.lua");
        assert_eq!(got, dir.path().join("beside.lua"));
        // As written when that exists relative to the working directory (cargo runs unit
        // tests in the package's directory).
        assert_eq!(
            super::script_path(dir.path(), "Cargo.toml"),
            Path::new("Cargo.toml")
        );
        let c = Config {
            path: Some(dir.path().join("fluent-bit.conf")),
            ..Config::default()
        };
        let ctx = BuildContext::standalone("lua.0", c).unwrap();
        let mut section = Section::new(SectionKind::Filter, span(1));
        section.push("script", "beside.lua", span(2));
        section.push("call", "f", span(3));
        let refs: Vec<&Entry> = section.entries.iter().collect();
        let mut f = (PLUGIN.build)(&ctx, &section, &refs).unwrap();
        let out = run_timed(f.as_mut(), records(r#"{"a":1}"#));
        assert_eq!(out[0].1, r#"{"a":1,"found":true}"#);
    }
    /// Rough cost per record (run with `--ignored --nocapture`): a container log record with
    /// kubernetes metadata through a script that adds one key.
    #[test]
    #[ignore]
    fn throughput() {
        let (mut f, _) = build_ctx(&[
            ("call", "cb"),
            (
                "code",
                "function cb(tag, ts, r) r.env = 'prod' return 2, ts, r end",
            ),
        ]);
        let one = r#"{"log":"10.0.0.1 - - [29/Nov/2026:20:00:00 +0000] \"GET / HTTP/1.1\" 200 612","stream":"stdout","time":"2026-11-29T20:00:00.000000000Z","kubernetes":{"pod_name":"web-7d4b9c-x2v9q","namespace_name":"default","pod_id":"0b1e2c3d","labels":{"app":"web","pod-template-hash":"7d4b9c"},"host":"ip-10-0-1-23","container_name":"nginx","docker_id":"abc123","container_image":"nginx:1.27"}}"#;
        let batch = format!("[{}]", vec![one; 1000].join(","));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let inputs: Vec<Vec<Record>> = (0..20).map(|_| records(&batch)).collect();
        let start = std::time::Instant::now();
        for mut recs in inputs {
            rt.block_on(f.filter("app", &mut recs));
            assert_eq!(recs.len(), 1000);
        }
        let secs = start.elapsed().as_secs_f64();
        println!("lua: {:.0} records/s", 20_000.0 / secs);
    }
}
