//! Loading, validating and precompiling guest modules.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use asyncer_protocol::schema::{self, TaskTypes, SCHEMA_SECTION};
use asyncer_protocol::{
    EngineFlavor, ABI_ALLOC_EXPORT, ABI_HOST_MODULE, ABI_MEMORY_EXPORT, ABI_START_EXPORT,
    ABI_TASK_ALT_PREFIX, ABI_TASK_PREFIX, ABI_WASI_MODULE,
};
use sha2::{Digest, Sha256};
use wasmtime::{Engine, ExternType, ValType};

use crate::{ArtifactCache, Capabilities, Error, Limits};

/// A validated guest module, precompiled for the workers.
///
/// Cheap to clone. Made by [`Executor::load`](crate::Executor::load) or
/// [`Executor::load_bytes`](crate::Executor::load_bytes).
///
/// # Examples
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), asyncer::Error> {
/// # let exec = asyncer::Executor::builder().build()?;
/// let module = exec.load("tasks.wasm").await?;
/// let again = exec.load("tasks.wasm").await?; // same bytes: compiled once
/// assert_eq!(module.hash(), again.hash());
/// assert!(module.has_task("add"));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Module {
    inner: Arc<ModuleInner>,
    limits: Option<Limits>,
    capabilities: Option<Capabilities>,
}

struct ModuleInner {
    name: String,
    hash: String,
    bytes: Arc<[u8]>,
    tasks: Vec<String>,
    /// Exports `_start`: runs as a WASI command.
    command: bool,
    /// The described input and output types of its tasks, by task name.
    types: HashMap<String, TaskTypes>,
    imports: Vec<String>,
    /// Compiled code per engine flavor, made on first use.
    artifacts: Mutex<HashMap<EngineFlavor, Artifact>>,
}

impl fmt::Debug for Module {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Module")
            .field("name", &self.inner.name)
            .field("hash", &self.inner.hash)
            .field("tasks", &self.inner.tasks)
            .finish()
    }
}

impl Module {
    /// The file name it was loaded from, or `"<bytes>"`.
    ///
    /// # Examples
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncer::Error> {
    /// # let exec = asyncer::Executor::builder().build()?;
    /// let module = exec.load("tasks.wasm").await?;
    /// assert_eq!(module.name(), "tasks.wasm");
    /// # Ok(())
    /// # }
    /// ```
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Hex SHA-256 of the module bytes: its identity in events and the cache.
    ///
    /// # Examples
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncer::Error> {
    /// # let exec = asyncer::Executor::builder().build()?;
    /// let module = exec.load("tasks.wasm").await?;
    /// assert_eq!(module.hash().len(), 64);
    /// # Ok(())
    /// # }
    /// ```
    pub fn hash(&self) -> &str {
        &self.inner.hash
    }

    /// The module's bytes (what its hash is the SHA-256 of), for shipping
    /// it elsewhere, e.g. to a cluster's module store.
    ///
    /// # Examples
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncer::Error> {
    /// # let exec = asyncer::Executor::builder().build()?;
    /// let module = exec.load("tasks.wasm").await?;
    /// assert_eq!(&module.bytes()[..4], b"\0asm");
    /// # Ok(())
    /// # }
    /// ```
    pub fn bytes(&self) -> &[u8] {
        &self.inner.bytes
    }

    /// The task names it exports, sorted.
    ///
    /// # Examples
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncer::Error> {
    /// # let exec = asyncer::Executor::builder().build()?;
    /// let module = exec.load("tasks.wasm").await?;
    /// for task in module.tasks() {
    ///     println!("task:{task}");
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn tasks(&self) -> &[String] {
        &self.inner.tasks
    }

    /// This module with its own default limits, used by its tasks unless a
    /// task sets its own (task > module > executor).
    ///
    /// # Examples
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncer::Error> {
    /// use asyncer::Limits;
    /// use std::time::Duration;
    /// # let exec = asyncer::Executor::builder().build()?;
    /// let untrusted = exec
    ///     .load("uploaded.wasm")
    ///     .await?
    ///     .with_limits(Limits::default().with_timeout(Duration::from_secs(1)).with_max_memory_bytes(32 << 20));
    /// # let _ = untrusted;
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = Some(limits);
        self
    }

    /// This module with its own default capabilities (task > module >
    /// executor).
    ///
    /// # Examples
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncer::Error> {
    /// use asyncer::Capabilities;
    /// # let exec = asyncer::Executor::builder().build()?;
    /// let module = exec
    ///     .load("indexer.wasm")
    ///     .await?
    ///     .with_capabilities(Capabilities::none().read_only_dir("/srv/docs", "/docs"));
    /// # let _ = module;
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_capabilities(mut self, capabilities: Capabilities) -> Self {
        self.capabilities = Some(capabilities);
        self
    }

    pub(crate) fn limits(&self) -> Option<&Limits> {
        self.limits.as_ref()
    }

    pub(crate) fn capabilities(&self) -> Option<&Capabilities> {
        self.capabilities.as_ref()
    }

    /// Its imports, as `module::name`.
    ///
    /// # Examples
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncer::Error> {
    /// # let exec = asyncer::Executor::builder().build()?;
    /// let module = exec.load("tasks.wasm").await?;
    /// assert!(module.imports().iter().all(|i| i.starts_with("wasi_snapshot_preview1::") || i.starts_with("asyncer::")));
    /// # Ok(())
    /// # }
    /// ```
    pub fn imports(&self) -> &[String] {
        &self.inner.imports
    }

    /// Whether it exports task `name`.
    ///
    /// # Examples
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncer::Error> {
    /// # let exec = asyncer::Executor::builder().build()?;
    /// let module = exec.load("tasks.wasm").await?;
    /// if !module.has_task("resize") {
    ///     eprintln!("this module cannot resize images");
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn has_task(&self, name: &str) -> bool {
        self.inner
            .tasks
            .binary_search_by(|t| t.as_str().cmp(name))
            .is_ok()
    }

    /// The described input and output types of `task`, when the module
    /// carries them (every `#[task]` of `asyncer-guest` does; see
    /// `asyncer_protocol::schema` for the section other toolchains can
    /// write).
    ///
    /// # Examples
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), asyncer::Error> {
    /// # let exec = asyncer::Executor::builder().build()?;
    /// let module = exec.load("heavy.wasm").await?;
    /// let types = module.task_types("heavy").expect("described");
    /// println!("heavy({}) -> {}", types.input, types.output);
    /// # Ok(())
    /// # }
    /// ```
    pub fn task_types(&self, task: &str) -> Option<&TaskTypes> {
        self.inner.types.get(task)
    }

    /// The postcard input of `task` for a JSON `value`, following the
    /// module's description of the task's input type (the mapping is in
    /// [`Executor::submit_json`](crate::Executor::submit_json)).
    ///
    /// # Errors
    /// [`Error::NoSuchTask`]; [`Error::Decode`] when the module does not
    /// describe the task, or `value` does not fit (the message says where:
    /// `input at .uid: expected a string, found the number 5`).
    pub fn encode_json(&self, task: &str, value: &serde_json::Value) -> Result<Vec<u8>, Error> {
        let types = self.described(task)?;
        crate::json::encode(&types.input, value).map_err(|message| Error::Decode {
            message: format!("input {message}"),
        })
    }

    /// The JSON value of `task`'s postcard `output`, following the module's
    /// description of the task's output type.
    ///
    /// # Errors
    /// As [`encode_json`](Self::encode_json), for the output.
    pub fn decode_json(&self, task: &str, output: &[u8]) -> Result<serde_json::Value, Error> {
        let types = self.described(task)?;
        crate::json::decode(&types.output, output).map_err(|message| Error::Decode {
            message: format!("output {message}"),
        })
    }

    fn described(&self, task: &str) -> Result<&TaskTypes, Error> {
        self.check_task(task)?;
        self.task_types(task).ok_or_else(|| Error::Decode {
            message: format!(
                "module {} does not describe the types of task `{task}` (its guest was built \
                 without them: `#[task(no_schema)]`, or another toolchain), so it takes bytes, not JSON",
                self.name()
            ),
        })
    }

    /// Whether the module is a WASI command (it exports `_start`): it runs
    /// with [`Executor::submit_command`](crate::Executor::submit_command).
    /// A module may be a command and have tasks too.
    pub fn is_command(&self) -> bool {
        self.inner.command
    }

    /// [`Error::NoSuchTask`] (for `_start`) unless the module is a command.
    pub(crate) fn check_command(&self) -> Result<(), Error> {
        if self.is_command() {
            Ok(())
        } else {
            Err(Error::NoSuchTask {
                task: ABI_START_EXPORT.to_owned(),
                available: self.inner.tasks.clone(),
            })
        }
    }

    pub(crate) fn check_task(&self, name: &str) -> Result<(), Error> {
        if self.has_task(name) {
            Ok(())
        } else {
            Err(Error::NoSuchTask {
                task: name.to_owned(),
                available: self.inner.tasks.clone(),
            })
        }
    }
}

/// A module compiled for one engine flavor.
#[derive(Clone)]
pub(crate) struct Artifact {
    /// The precompiled file the workers memory-map.
    pub(crate) path: Arc<PathBuf>,
    /// The same code, loaded in this process.
    pub(crate) compiled: wasmtime::Module,
    /// The engine it belongs to.
    pub(crate) engine: Engine,
}

/// Compiles modules and keeps their artifacts, shared by an executor.
pub(crate) struct Compiler {
    engines: Mutex<HashMap<EngineFlavor, Engine>>,
    modules: Mutex<HashMap<String, Module>>,
    cache: ArtifactCache,
    /// The executor's private directories (the cache, unless caller-given,
    /// and the workers' work directory), removed with the compiler.
    _dirs: Option<tempfile::TempDir>,
    /// The hashes of the only modules that may load, when there is a list.
    allowed: Option<std::collections::HashSet<String>>,
}

impl Compiler {
    pub(crate) fn new(cache: ArtifactCache) -> Self {
        Compiler {
            engines: Mutex::new(HashMap::new()),
            modules: Mutex::new(HashMap::new()),
            cache,
            _dirs: None,
            allowed: None,
        }
    }

    /// Whether a module with `hash` may load.
    pub(crate) fn allows(&self, hash: &str) -> bool {
        self.allowed
            .as_ref()
            .is_none_or(|allowed| allowed.contains(&hash.to_ascii_lowercase()))
    }

    /// Loads only modules whose hash is in `allowed` (when given).
    pub(crate) fn allowing(mut self, allowed: Option<std::collections::HashSet<String>>) -> Self {
        self.allowed = allowed;
        self
    }

    /// Keeps `dirs` for as long as this compiler lives.
    pub(crate) fn keeping(mut self, dirs: tempfile::TempDir) -> Self {
        self._dirs = Some(dirs);
        self
    }

    fn engine(&self, flavor: EngineFlavor) -> Result<Engine, Error> {
        let mut engines = self.engines.lock().expect("engine map poisoned");
        if let Some(engine) = engines.get(&flavor) {
            return Ok(engine.clone());
        }
        let engine = asyncer_worker::new_engine(flavor).map_err(Error::engine)?;
        engines.insert(flavor, engine.clone());
        Ok(engine)
    }

    /// Reads `path` and loads it (blocking).
    pub(crate) fn load_path(&self, path: &Path, flavor: EngineFlavor) -> Result<Module, Error> {
        let bytes = std::fs::read(path).map_err(|e| Error::ModuleNotFound {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        self.load_bytes(name, bytes.into(), flavor)
    }

    /// Validates and precompiles `bytes` for `flavor` (blocking: CPU work).
    pub(crate) fn load_bytes(
        &self,
        name: String,
        bytes: Arc<[u8]>,
        flavor: EngineFlavor,
    ) -> Result<Module, Error> {
        let hash = hex(&Sha256::digest(&bytes));
        if !self.allows(&hash) {
            return Err(Error::ModuleNotAllowed { hash });
        }
        if let Some(module) = self.modules.lock().expect("module map poisoned").get(&hash) {
            let module = module.clone();
            self.artifact(&module, flavor)?;
            return Ok(module);
        }
        let engine = self.engine(flavor)?;
        let (compiled, path) = self.compiled(&engine, &name, &hash, &bytes, flavor)?;
        let linker = asyncer_worker::new_linker(&engine).map_err(Error::link)?;
        let (tasks, command) =
            check_abi(&linker, &compiled).map_err(|message| Error::InvalidModule {
                message: format!("{name}: {message}"),
            })?;
        let types = task_types(&bytes, &tasks).map_err(|message| Error::InvalidModule {
            message: format!("{name}: {message}"),
        })?;
        let module = Module {
            inner: Arc::new(ModuleInner {
                name,
                hash: hash.clone(),
                bytes,
                tasks,
                command,
                types,
                imports: compiled
                    .imports()
                    .map(|i| format!("{}::{}", i.module(), i.name()))
                    .collect(),
                artifacts: Mutex::new(HashMap::new()),
            }),
            limits: None,
            capabilities: None,
        };
        let artifact = Artifact {
            path: Arc::new(path),
            compiled,
            engine,
        };
        module
            .inner
            .artifacts
            .lock()
            .expect("artifact map poisoned")
            .insert(flavor, artifact);
        self.modules
            .lock()
            .expect("module map poisoned")
            .entry(hash)
            .or_insert_with(|| module.clone());
        Ok(module)
    }

    /// The artifact of `module` for `flavor`, compiling it on first use
    /// (blocking).
    pub(crate) fn artifact(
        &self,
        module: &Module,
        flavor: EngineFlavor,
    ) -> Result<Artifact, Error> {
        let mut artifacts = module
            .inner
            .artifacts
            .lock()
            .expect("artifact map poisoned");
        if let Some(artifact) = artifacts.get(&flavor) {
            return Ok(artifact.clone());
        }
        let engine = self.engine(flavor)?;
        let inner = &module.inner;
        let (compiled, path) =
            self.compiled(&engine, &inner.name, &inner.hash, &inner.bytes, flavor)?;
        let artifact = Artifact {
            path: Arc::new(path),
            compiled,
            engine,
        };
        artifacts.insert(flavor, artifact.clone());
        Ok(artifact)
    }

    /// The code of module `bytes` for `engine` and its artifact file: loaded
    /// from the cache when an earlier compile (by any process sharing the
    /// cache) left it there, else compiled and stored (blocking: CPU work).
    fn compiled(
        &self,
        engine: &Engine,
        name: &str,
        hash: &str,
        bytes: &[u8],
        flavor: EngineFlavor,
    ) -> Result<(wasmtime::Module, PathBuf), Error> {
        let path = self.cache.path_for(hash, flavor, engine);
        if path.exists() {
            match asyncer_worker::artifact::open(engine, &path) {
                Ok(compiled) => {
                    ArtifactCache::touch(&path);
                    tracing::debug!(
                        module = name,
                        hash,
                        ?flavor,
                        "loaded from the artifact cache"
                    );
                    return Ok((compiled, path));
                }
                Err(e) => {
                    tracing::warn!(
                        module = name,
                        file = %path.display(),
                        error = %format!("{e:#}"),
                        "a cached artifact cannot be loaded; compiling again"
                    );
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let compiled = compile(engine, name, bytes)?;
        tracing::debug!(module = name, hash, ?flavor, "compiled");
        let serialized = compiled.serialize().map_err(Error::engine)?;
        self.cache.store(&path, &serialized)?;
        Ok((compiled, path))
    }

    /// The artifact of `module` for `flavor` if it is already compiled.
    pub(crate) fn cached_artifact(
        &self,
        module: &Module,
        flavor: EngineFlavor,
    ) -> Option<Artifact> {
        let artifacts = module
            .inner
            .artifacts
            .lock()
            .expect("artifact map poisoned");
        artifacts.get(&flavor).cloned()
    }
}

/// Compiles (and so validates) module bytes for `engine`.
fn compile(engine: &Engine, name: &str, bytes: &[u8]) -> Result<wasmtime::Module, Error> {
    wasmtime::Module::new(engine, bytes).map_err(|e| Error::InvalidModule {
        message: format!("{name}: {e:#}"),
    })
}

/// Checks guest ABI v1: only WASI imports and the `asyncer` host module
/// (all of them known, with the right types), a `memory`,
/// `asyncer_alloc: (i32) -> i32`, and tasks `task:NAME: (i32, i32) -> i64`;
/// or a WASI command (`_start: () -> ()`), which needs none of the three
/// unless it has tasks too. Returns the sorted task names and whether the
/// module is a command.
fn check_abi(
    linker: &wasmtime::Linker<asyncer_worker::StoreState>,
    module: &wasmtime::Module,
) -> Result<(Vec<String>, bool), String> {
    for import in module.imports() {
        if import.module() != ABI_WASI_MODULE && import.module() != ABI_HOST_MODULE {
            return Err(format!(
                "imports `{}::{}`, but a guest may only import from `{ABI_WASI_MODULE}` and `{ABI_HOST_MODULE}`",
                import.module(),
                import.name()
            ));
        }
    }
    linker
        .instantiate_pre(module)
        .map_err(|e| format!("unsupported import: {e:#}"))?;

    let mut has_memory = false;
    let mut has_alloc = false;
    let mut command = false;
    let mut tasks = Vec::new();
    for export in module.exports() {
        let name = export.name();
        match (name, export.ty()) {
            (ABI_MEMORY_EXPORT, ExternType::Memory(_)) => has_memory = true,
            (ABI_START_EXPORT, ty) => {
                let ExternType::Func(ty) = ty else {
                    return Err(format!("`{ABI_START_EXPORT}` must be a function"));
                };
                if !signature_is(&ty, &[], &[]) {
                    return Err(format!(
                        "`{ABI_START_EXPORT}` must have type () -> (), not {ty}"
                    ));
                }
                command = true;
            }
            (ABI_ALLOC_EXPORT, ExternType::Func(ty)) => {
                if !signature_is(&ty, &[ValType::I32], &[ValType::I32]) {
                    return Err(format!(
                        "`{ABI_ALLOC_EXPORT}` must have type (i32) -> i32, not {ty}"
                    ));
                }
                has_alloc = true;
            }
            (_, ty) if task_name(name).is_some() => {
                let ExternType::Func(ty) = ty else {
                    return Err(format!("export `{name}` must be a function"));
                };
                if !signature_is(&ty, &[ValType::I32, ValType::I32], &[ValType::I64]) {
                    return Err(format!(
                        "task export `{name}` must have type (i32, i32) -> i64, not {ty}"
                    ));
                }
                tasks.push(task_name(name).unwrap_or_default().to_owned());
            }
            _ => {}
        }
    }
    // A pure command needs none of what tasks need.
    if command && tasks.is_empty() {
        return Ok((tasks, command));
    }
    if !has_memory {
        return Err(format!(
            "the module exports no memory named `{ABI_MEMORY_EXPORT}`"
        ));
    }
    if !has_alloc {
        return Err(format!(
            "the module exports no `{ABI_ALLOC_EXPORT}` function"
        ));
    }
    if tasks.is_empty() {
        return Err(format!(
            "the module exports no task (`{ABI_TASK_PREFIX}NAME` or `{ABI_TASK_ALT_PREFIX}NAME` functions) \
             and is no WASI command (`{ABI_START_EXPORT}`)"
        ));
    }
    tasks.sort();
    if let Some(twice) = tasks.windows(2).find(|pair| pair[0] == pair[1]) {
        return Err(format!(
            "task `{0}` is exported twice, as `{ABI_TASK_PREFIX}{0}` and `{ABI_TASK_ALT_PREFIX}{0}`",
            twice[0]
        ));
    }
    Ok((tasks, command))
}

/// The types its `asyncer.schema` custom section describes, by task; each
/// must be a task the module exports.
fn task_types(bytes: &[u8], tasks: &[String]) -> Result<HashMap<String, TaskTypes>, String> {
    let mut section = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        // The module was validated already; a parse error here is no news.
        let Ok(payload) = payload else { break };
        if let wasmparser::Payload::CustomSection(custom) = payload {
            if custom.name() == SCHEMA_SECTION {
                section.extend_from_slice(custom.data());
            }
        }
    }
    let described = schema::parse_section(&section)
        .map_err(|e| format!("its `{SCHEMA_SECTION}` section is damaged: {e}"))?;
    let mut types = HashMap::new();
    for entry in described {
        if !tasks.contains(&entry.task) {
            return Err(format!(
                "its `{SCHEMA_SECTION}` section describes task `{}`, which it does not export",
                entry.task
            ));
        }
        types.insert(entry.task.clone(), entry);
    }
    Ok(types)
}

/// The task an export names, in either of the ABI's two namings.
fn task_name(export: &str) -> Option<&str> {
    export
        .strip_prefix(ABI_TASK_PREFIX)
        .or_else(|| export.strip_prefix(ABI_TASK_ALT_PREFIX))
        .filter(|name| !name.is_empty())
}

fn signature_is(ty: &wasmtime::FuncType, params: &[ValType], results: &[ValType]) -> bool {
    let same = |a: &mut dyn ExactSizeIterator<Item = ValType>, b: &[ValType]| {
        a.len() == b.len() && a.zip(b).all(|(x, y)| ValType::eq(&x, y))
    };
    same(&mut ty.params(), params) && same(&mut ty.results(), results)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
