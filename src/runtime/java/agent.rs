//! Setting up a JVM for Java frames: fdguard as a JVM TI agent.
//!
//! # When
//! - At the JVM's start, `Agent_OnLoad`: the JVM loads the library (already preloaded, the same
//!   file) as an agent because `fdguard run` put `-agentpath:libfdguard.so` in
//!   `JAVA_TOOL_OPTIONS`. The environment asks for its capabilities and events there, and the
//!   rest is done at `VMInit`, in the main thread, before `main`.
//! - In a running JVM, after `fdguard attach` (`attached`, from `Agent_OnAttach` in the
//!   attach listener's thread), all at once; `fdguard detach` turns the events off again.
//!
//! Obtaining the environment lazily instead (`GetEnv` on the first `open` of a Java thread
//! once a JVM exists) would do all of it inside some program thread's `open`, only from a Java
//! thread in native code, and with no notice that the JVM was loaded: fdguard interposes no
//! `dlopen`. The agent is told when the JVM starts, in a thread where JVM TI is allowed, and it
//! costs the line `Picked up JAVA_TOOL_OPTIONS: ...` the JVM prints on stderr.
//!
//! # What
//! `ClassLoad` events on (`AsyncGetCallTrace` walks nothing without them), a jmethodID for
//! every method (`GetClassMethods` for each class already loaded, and for each class as it is
//! prepared), and what `super::capture` reads of HotSpot: the walk's entry point, HotSpot's
//! thread key, where a `JavaThread` keeps its `JNIEnv` (this thread's `JNIEnv` minus its
//! `java.lang.Thread.eetop`, the `JavaThread*`) and its state (`gHotSpotVMStructs`, the table
//! HotSpot publishes for its serviceability agent). A JVM that lacks any of it (not HotSpot)
//! is named in reports' header, with the reason, and stacks keep their native frames.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::OnceLock;
use std::sync::atomic::Ordering;

use fdguard_core::program::Runtime;
use fdguard_core::report::RuntimeInfo;

use super::jvmti::{self, Jni, Jvmti, Vm};
use super::{HOTSPOT, Hotspot, LIVE};
use crate::guard;
use crate::os;
use crate::runtime::{self, Kind};

/// fdguard's JVM TI environment and its JVM, once made.
static ENV: OnceLock<(Vm, Jvmti)> = OnceLock::new();

/// The most pthread keys glibc hands out (`PTHREAD_KEYS_MAX`).
const PTHREAD_KEYS_MAX: libc::pthread_key_t = 1024;

/// The agent entry point HotSpot calls at start for `-agentpath:libfdguard.so`. Always 0: a
/// JVM whose agent fails does not start, and fdguard never stops a program.
///
/// # Safety
/// `vm` is the JVM being created (the JVM's promise to agents).
#[unsafe(no_mangle)]
#[allow(non_snake_case)]
pub unsafe extern "C" fn Agent_OnLoad(
    vm: *mut c_void,
    _options: *const c_char,
    _reserved: *mut c_void,
) -> c_int {
    // Loaded only as an agent (not preloaded), or turned off: nothing to name frames for.
    if guard::is_active() {
        guard::contained(|| {
            if let Err(why) = environment(Vm(vm)).and_then(|env| events(env, true)) {
                not_read(&format!("its JVM TI agent could not start ({why})"));
            }
        });
    }
    0
}

/// Sets up a running JVM after `fdguard attach` (in the attach listener's thread).
pub fn attached(vm: *mut c_void) {
    let vm = Vm(vm);
    let set_up = environment(vm).and_then(|env| {
        events(env, false)?;
        let jni = vm
            .jni()
            .ok_or("the attaching thread is not a Java thread")?;
        Ok((env, jni))
    });
    match set_up {
        Ok((env, jni)) => ready(vm, env, jni),
        Err(why) => not_read(&format!(
            "its JVM TI environment could not be set up ({why})"
        )),
    }
}

/// `fdguard detach`: no more walks, no more events.
pub fn detached() {
    LIVE.store(false, Ordering::Release);
    if let Some((_, env)) = ENV.get() {
        for event in [jvmti::CLASS_LOAD, jvmti::CLASS_PREPARE] {
            let _ = env.set_event(jvmti::DISABLE, event);
        }
    }
}

/// fdguard's environment (made once, with the capabilities to name frames).
fn environment(vm: Vm) -> Result<Jvmti, String> {
    if let Some((_, env)) = ENV.get() {
        return Ok(*env);
    }
    let env = vm.jvmti().ok_or("GetEnv refused a JVM TI environment")?;
    env.add_name_capabilities()
        .map_err(|e| format!("no line numbers or source files: JVM TI error {e}"))?;
    let mut callbacks = [0usize; jvmti::CALLBACK_SLOTS];
    let at = |event: i32| (event - jvmti::VM_INIT) as usize;
    callbacks[at(jvmti::VM_INIT)] = vm_init as *const () as usize;
    callbacks[at(jvmti::VM_DEATH)] = vm_death as *const () as usize;
    callbacks[at(jvmti::CLASS_LOAD)] = class_load as *const () as usize;
    callbacks[at(jvmti::CLASS_PREPARE)] = class_prepare as *const () as usize;
    env.set_event_callbacks(&callbacks)
        .map_err(|e| format!("JVM TI error {e} setting callbacks"))?;
    let _ = ENV.set((vm, env));
    Ok(env)
}

/// Turns on the events fdguard needs (and `VMInit` at the JVM's start).
fn events(env: Jvmti, starting: bool) -> Result<(), String> {
    let init = starting.then_some(jvmti::VM_INIT);
    for event in [jvmti::VM_DEATH, jvmti::CLASS_LOAD, jvmti::CLASS_PREPARE]
        .into_iter()
        .chain(init)
    {
        env.set_event(jvmti::ENABLE, event)
            .map_err(|e| format!("JVM TI error {e} enabling event {event}"))?;
    }
    Ok(())
}

/// Reports will name the JVM without reading its frames, saying why.
fn not_read(why: &str) {
    let info = RuntimeInfo {
        name: Runtime::Jvm,
        why: Some(why.to_string()),
        ..RuntimeInfo::default()
    };
    runtime::recognised(info, None);
}

unsafe extern "C" fn vm_init(_env: *mut c_void, jni: *mut c_void, _thread: *mut c_void) {
    if let Some((vm, env)) = ENV.get() {
        guard::contained(|| ready(*vm, *env, Jni(jni)));
    }
}

unsafe extern "C" fn vm_death(_env: *mut c_void, _jni: *mut c_void) {
    LIVE.store(false, Ordering::Release);
}

/// `ClassLoad` events only need to be on (see the module's documentation).
unsafe extern "C" fn class_load(_: *mut c_void, _: *mut c_void, _: *mut c_void, _: *mut c_void) {}

unsafe extern "C" fn class_prepare(
    _env: *mut c_void,
    _jni: *mut c_void,
    _thread: *mut c_void,
    class: *mut c_void,
) {
    if let Some((_, env)) = ENV.get() {
        // Asking for the methods gives each its jmethodID; the answer itself is not needed.
        let _ = env.class_methods(class);
    }
}

/// Makes the jmethodIDs of the classes loaded so far, finds what captures read of HotSpot,
/// and starts reading frames (or says why not). In a Java thread in native code.
fn ready(vm: Vm, env: Jvmti, jni: Jni) {
    if let Ok(classes) = env.loaded_classes() {
        for class in classes.as_slice() {
            let _ = env.class_methods(*class);
            jni.delete_local_ref(*class);
        }
    }
    let version = env
        .system_property(c"java.vm.version")
        .map(|v| String::from_utf8_lossy(v.bytes()).into_owned())
        .unwrap_or_default();
    let mut info = RuntimeInfo {
        name: Runtime::Jvm,
        version,
        ..RuntimeInfo::default()
    };
    let found = match HOTSPOT.get() {
        Some(_) => Ok(()),
        None => hotspot(vm, env, jni).map(|hs| {
            let _ = HOTSPOT.set(hs);
        }),
    };
    match found {
        Ok(()) => {
            info.frames = true;
            LIVE.store(true, Ordering::Release);
            runtime::recognised(info, Some(Kind::Java));
        }
        Err(why) => {
            info.why = Some(why);
            runtime::recognised(info, None);
        }
    }
}

/// `libjvm.so`, opened again to look symbols up in it.
struct Libjvm {
    handle: *mut c_void,
    path: String,
}

impl Libjvm {
    /// The object holding the JVM's invocation table (`vm` points into it).
    fn of(vm: Vm) -> Result<Libjvm, String> {
        let mut info = std::mem::MaybeUninit::<libc::Dl_info>::zeroed();
        // SAFETY: `info` is writable; dladdr fills it for an address inside a loaded object
        // (the JVM's `main_vm`), and `dli_fname` then points to the loader's copy of its name.
        let path = unsafe {
            if libc::dladdr(vm.0, info.as_mut_ptr()) == 0 || info.assume_init().dli_fname.is_null()
            {
                return Err("the JVM is in no loaded object".into());
            }
            CStr::from_ptr(info.assume_init().dli_fname)
        };
        // SAFETY: RTLD_NOLOAD only finds the object already loaded (a reference more, given
        // back in `drop`).
        let handle = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOLOAD | libc::RTLD_LAZY) };
        if handle.is_null() {
            return Err("the JVM's library cannot be looked up".into());
        }
        Ok(Libjvm {
            handle,
            path: path.to_string_lossy().into_owned(),
        })
    }

    fn symbol(&self, name: &CStr) -> Option<usize> {
        // SAFETY: dlsym on a live handle with a NUL-terminated name.
        let p = unsafe { libc::dlsym(self.handle, name.as_ptr()) };
        (!p.is_null()).then_some(p as usize)
    }

    /// The value of an exported `uint64_t` or pointer variable (the VMStructs' layout).
    fn word(&self, name: &CStr) -> Option<usize> {
        let at = self.symbol(name)?;
        // SAFETY: `at` is the address of an exported 64-bit variable of the loaded object.
        Some(unsafe { (at as *const usize).read() })
    }

    /// The word `gHotSpotVMStructs` has for HotSpot's `type_name::field` at the entry offset
    /// the variable `which` says (its offset in the type, or a static field's address).
    fn struct_entry(&self, type_name: &[u8], field: &[u8], which: &CStr) -> Option<usize> {
        let table = self.word(c"gHotSpotVMStructs")?;
        let type_at = self.word(c"gHotSpotVMStructEntryTypeNameOffset")?;
        let field_at = self.word(c"gHotSpotVMStructEntryFieldNameOffset")?;
        let value_at = self.word(which)?;
        let stride = self.word(c"gHotSpotVMStructEntryArrayStride")?;
        entries(table, stride, type_at).find_map(|entry| {
            let is = |at: usize, name: &[u8]| text_at(entry + at).is_some_and(|t| t == name);
            (is(type_at, type_name) && is(field_at, field)).then(|| word_at(entry + value_at))
        })
    }

    /// The offset of `field` in HotSpot's `type_name`.
    fn field_offset(&self, type_name: &[u8], field: &[u8]) -> Option<usize> {
        self.struct_entry(type_name, field, c"gHotSpotVMStructEntryOffsetOffset")
    }

    /// The value of HotSpot's static field `type_name::field` (a pointer or an address).
    fn static_field(&self, type_name: &[u8], field: &[u8]) -> Option<usize> {
        let at = self.struct_entry(type_name, field, c"gHotSpotVMStructEntryAddressOffset")?;
        (at != 0).then(|| word_at(at))
    }

    /// A HotSpot integer constant, from `gHotSpotVMIntConstants`.
    fn int_constant(&self, name: &[u8]) -> Option<i32> {
        let table = self.word(c"gHotSpotVMIntConstants")?;
        let name_at = self.word(c"gHotSpotVMIntConstantEntryNameOffset")?;
        let value_at = self.word(c"gHotSpotVMIntConstantEntryValueOffset")?;
        let stride = self.word(c"gHotSpotVMIntConstantEntryArrayStride")?;
        entries(table, stride, name_at).find_map(|entry| {
            (text_at(entry + name_at)? == name).then(|| word_at(entry + value_at) as i32)
        })
    }

    /// The JDK's directory: `libjvm.so` is in its `lib/server`.
    fn home(&self) -> Option<String> {
        let home = std::path::Path::new(&self.path).ancestors().nth(3)?;
        Some(home.join("").to_string_lossy().into_owned())
    }
}

impl Drop for Libjvm {
    fn drop(&mut self) {
        // SAFETY: gives back the reference `of` took; the JVM keeps its own.
        unsafe { libc::dlclose(self.handle) };
    }
}

/// The most entries a VMStructs table is read for (JDK 17 has ~2000).
const MAX_ENTRIES: usize = 100_000;

/// The entries of a VMStructs table, up to the one whose name pointer (at `name_at`) is null.
fn entries(table: usize, stride: usize, name_at: usize) -> impl Iterator<Item = usize> {
    (0..MAX_ENTRIES)
        .map(move |i| table + i * stride)
        .take_while(move |e| table != 0 && stride != 0 && word_at(e + name_at) != 0)
}

fn word_at(addr: usize) -> usize {
    // SAFETY: callers read inside HotSpot's VMStructs tables, static data of libjvm.so laid
    // out as the exported strides and offsets say.
    unsafe { (addr as *const usize).read() }
}

/// The NUL-terminated string a VMStructs entry points to at `addr`.
fn text_at(addr: usize) -> Option<&'static [u8]> {
    let p = word_at(addr) as *const c_char;
    // SAFETY: VMStructs names are static NUL-terminated strings of libjvm.so.
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_bytes())
}

/// libc's signal return trampoline, as the handlers installed through libc have it (HotSpot's
/// own, for `SIGSEGV` and the like, at least).
fn restorer() -> usize {
    (1..32)
        .filter_map(os::signal::disposition)
        .find_map(|action| action.sa_restorer)
        .map_or(0, |f| f as usize)
}

/// What captures read of this HotSpot, found from the calling Java thread.
fn hotspot(vm: Vm, env: Jvmti, jni: Jni) -> Result<Hotspot, String> {
    let lib = Libjvm::of(vm)?;
    let walk = lib
        .symbol(c"AsyncGetCallTrace")
        .ok_or("not a HotSpot JVM: it has no AsyncGetCallTrace")?;
    let in_native = lib
        .int_constant(b"_thread_in_native")
        .ok_or("gHotSpotVMIntConstants has no _thread_in_native")?;
    let field = |type_name: &str, field: &str| {
        lib.field_offset(type_name.as_bytes(), field.as_bytes())
            .ok_or(format!("gHotSpotVMStructs has no {type_name}::{field}"))
    };
    let stack_base_offset = field("JavaThread", "_stack_base")?;
    let stack_size_offset = field("JavaThread", "_stack_size")?;
    let state_offset = field("JavaThread", "_thread_state")?;
    let last_java_sp_offset =
        field("JavaThread", "_anchor")? + field("JavaFrameAnchor", "_last_Java_sp")?;
    let thread = env
        .current_thread()
        .map_err(|e| format!("JVM TI error {e} asking for the current thread"))?;
    let eetop = jni.long_field(thread, c"eetop");
    jni.delete_local_ref(thread);
    let java_thread = eetop
        .filter(|t| *t != 0)
        .ok_or("java.lang.Thread has no eetop")? as usize;
    let env_offset = (jni.0 as usize)
        .checked_sub(java_thread)
        .filter(|o| *o < 1 << 16)
        .ok_or("the JNIEnv is not inside the JavaThread")?;
    let thread_key = (0..PTHREAD_KEYS_MAX)
        // SAFETY: pthread_getspecific on any key below the maximum reads this thread's slot
        // (null for keys not in use).
        .find(|k| unsafe { libc::pthread_getspecific(*k) } as usize == java_thread)
        .ok_or("HotSpot's thread key was not found")?;
    Ok(Hotspot {
        vm,
        jvmti: env,
        // SAFETY: HotSpot's exported `void AsyncGetCallTrace(ASGCT_CallTrace*, jint, void*)`.
        walk: unsafe { std::mem::transmute::<usize, super::AsyncGetCallTrace>(walk) },
        thread_key,
        env_offset,
        state_offset,
        in_native,
        stack_base_offset,
        stack_size_offset,
        last_java_sp_offset,
        restorer: restorer(),
        home: lib.home().ok_or("the JVM's library is not in a JDK")?,
        code_cache: lib
            .static_field(b"CodeCache", b"_low_bound")
            .zip(lib.static_field(b"CodeCache", b"_high_bound"))
            .ok_or("gHotSpotVMStructs has no CodeCache bounds")?,
    })
}
