//! The few JNI and JVM TI functions fdguard calls, through the JVM's function tables.
//!
//! # Why by hand
//! Both interfaces are a pointer to a table of function pointers whose order the JNI and JVM TI
//! specifications fix (the slot numbers below are `jni.h`'s and `jvmti.h`'s, checked with
//! `offsetof` against JDK 17's headers), so a dozen typed slots are all fdguard needs: no
//! binding crate, no C compiler. Every call is made in a thread the JVM allows it in: JNI and
//! JVM TI from a Java thread in native code (a callback, an agent entry point, or a hook whose
//! thread `super` checked), `GetEnv` from any thread whose HotSpot state is set up.

use std::ffi::{CStr, c_char, c_void};

/// `JNI_OK`, `JVMTI_ERROR_NONE`.
const OK: i32 = 0;
/// `JVMTI_VERSION_1_2`: every JVM TI function fdguard uses is in it.
const JVMTI_VERSION: i32 = 0x3001_0200;
/// `JNI_VERSION_1_6`.
const JNI_VERSION: i32 = 0x0001_0006;
/// `JVMTI_ENABLE`, `JVMTI_DISABLE`.
pub const ENABLE: i32 = 1;
pub const DISABLE: i32 = 0;
/// Events (`jvmtiEvent`), and their slot in `jvmtiEventCallbacks` (event number minus 50).
pub const VM_INIT: i32 = 50;
pub const VM_DEATH: i32 = 51;
pub const CLASS_LOAD: i32 = 55;
pub const CLASS_PREPARE: i32 = 56;
/// `jvmtiEventCallbacks` up to and including `ClassPrepare`; the JVM takes a shorter table
/// (`SetEventCallbacks` is told its size) and leaves the rest unset.
pub const CALLBACK_SLOTS: usize = 7;
/// `jvmtiCapabilities` (16 bytes of bit fields) with `can_get_source_file_name` (bit 11) and
/// `can_get_line_numbers` (bit 12): always available, even in a running JVM.
const NAME_CAPABILITIES: [u8; 16] = [0, 0x18, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

/// A `JavaVM*`: the JVM itself, valid for the life of the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vm(pub *mut c_void);

/// A `jvmtiEnv*`: fdguard's JVM TI environment (one per process, kept for its life).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Jvmti(pub *mut c_void);

/// A `JNIEnv*`: the current thread's (valid only in that thread).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Jni(pub *mut c_void);

// SAFETY: a JavaVM* and a jvmtiEnv* may be used from any attached thread (the JNI and JVM TI
// specifications say so); a JNIEnv* is only ever used by the thread it came from (`Jni` is not
// shared, it is passed down the calls of one thread).
unsafe impl Send for Vm {}
// SAFETY: as above.
unsafe impl Sync for Vm {}
// SAFETY: as above.
unsafe impl Send for Jvmti {}
// SAFETY: as above.
unsafe impl Sync for Jvmti {}

/// Slot `index` of the function table `env` points to.
///
/// # Safety
/// `env` is a live JavaVM*, JNIEnv* or jvmtiEnv* whose table has a function at `index` of
/// type `F` (a function pointer type).
unsafe fn slot<F: Copy>(env: *mut c_void, index: usize) -> F {
    debug_assert_eq!(std::mem::size_of::<F>(), std::mem::size_of::<usize>());
    // SAFETY: the caller's promise: `env` points to the table pointer, the table has `index`.
    unsafe {
        let table = *(env as *const *const usize);
        std::mem::transmute_copy(&*table.add(index))
    }
}

impl Vm {
    fn get_env(self, version: i32) -> Option<*mut c_void> {
        type F = unsafe extern "C" fn(*mut c_void, *mut *mut c_void, i32) -> i32;
        let mut env = std::ptr::null_mut();
        // SAFETY: `GetEnv` is slot 6 of `JNIInvokeInterface`; it only reads HotSpot's thread
        // pointer (callers make sure it is set up: see `super::java_thread`) and writes `env`.
        let rc = unsafe { slot::<F>(self.0, 6)(self.0, &mut env, version) };
        (rc == OK && !env.is_null()).then_some(env)
    }

    /// The calling thread's JNI environment; `None` for a thread that is not a Java thread.
    pub fn jni(self) -> Option<Jni> {
        self.get_env(JNI_VERSION).map(Jni)
    }

    /// A new JVM TI environment (in `Agent_OnLoad`, or from a Java thread in native code).
    pub fn jvmti(self) -> Option<Jvmti> {
        self.get_env(JVMTI_VERSION).map(Jvmti)
    }
}

/// Memory JVM TI allocated for a result: `len` `T`s, given back with `Deallocate`.
pub struct Allocated<T> {
    env: Jvmti,
    ptr: *mut T,
    len: usize,
}

impl<T> Allocated<T> {
    pub fn as_slice(&self) -> &[T] {
        if self.ptr.is_null() {
            return &[];
        }
        // SAFETY: JVM TI returned `len` initialized `T`s at `ptr`, ours until deallocated.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Allocated<c_char> {
    /// A string result (modified UTF-8, NUL-terminated).
    pub fn bytes(&self) -> &[u8] {
        if self.ptr.is_null() {
            return b"";
        }
        // SAFETY: JVM TI returns NUL-terminated strings.
        unsafe { CStr::from_ptr(self.ptr) }.to_bytes()
    }
}

impl<T> Drop for Allocated<T> {
    fn drop(&mut self) {
        type F = unsafe extern "C" fn(*mut c_void, *mut u8) -> i32;
        if !self.ptr.is_null() {
            // SAFETY: `Deallocate` (slot 46) takes memory the same environment allocated.
            unsafe { slot::<F>(self.env.0, 46)(self.env.0, self.ptr.cast()) };
        }
    }
}

/// A `jvmtiLineNumberEntry`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct LineEntry {
    pub start: i64,
    pub line: i32,
}

/// A `jvmtiFrameInfo`: a method and the index of its bytecode being executed (-1 in a native
/// method).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FrameInfo {
    pub method: *mut c_void,
    pub location: i64,
}

impl Default for FrameInfo {
    fn default() -> Self {
        FrameInfo {
            method: std::ptr::null_mut(),
            location: 0,
        }
    }
}

impl Jvmti {
    fn check(rc: i32) -> Result<(), i32> {
        if rc == OK { Ok(()) } else { Err(rc) }
    }

    /// Asks for the capabilities fdguard needs to name frames (source files, lines).
    pub fn add_name_capabilities(self) -> Result<(), i32> {
        type F = unsafe extern "C" fn(*mut c_void, *const [u8; 16]) -> i32;
        // SAFETY: `AddCapabilities` is slot 141; the argument is a jvmtiCapabilities.
        Self::check(unsafe { slot::<F>(self.0, 141)(self.0, &NAME_CAPABILITIES) })
    }

    /// Installs the event callbacks (`callbacks[i]` for event 50 + i; 0 for none).
    pub fn set_event_callbacks(self, callbacks: &[usize; CALLBACK_SLOTS]) -> Result<(), i32> {
        type F = unsafe extern "C" fn(*mut c_void, *const usize, i32) -> i32;
        let size = std::mem::size_of_val(callbacks) as i32;
        // SAFETY: `SetEventCallbacks` is slot 121; it copies `size` bytes of the table, whose
        // entries are null or `extern "C"` functions of the event's signature.
        Self::check(unsafe { slot::<F>(self.0, 121)(self.0, callbacks.as_ptr(), size) })
    }

    /// Enables or disables an event for every thread.
    pub fn set_event(self, mode: i32, event: i32) -> Result<(), i32> {
        type F = unsafe extern "C" fn(*mut c_void, i32, i32, *mut c_void, ...) -> i32;
        // SAFETY: `SetEventNotificationMode` is slot 1, variadic after the thread (null: all
        // threads), with no further arguments for these events.
        let rc = unsafe { slot::<F>(self.0, 1)(self.0, mode, event, std::ptr::null_mut()) };
        Self::check(rc)
    }

    /// Every class the JVM has loaded (local references in the calling thread's frame).
    pub fn loaded_classes(self) -> Result<Allocated<*mut c_void>, i32> {
        type F = unsafe extern "C" fn(*mut c_void, *mut i32, *mut *mut *mut c_void) -> i32;
        let (mut n, mut p) = (0, std::ptr::null_mut());
        // SAFETY: `GetLoadedClasses` is slot 77; it writes a count and an array it allocated.
        Self::check(unsafe { slot::<F>(self.0, 77)(self.0, &mut n, &mut p) })?;
        Ok(self.allocated(p, n))
    }

    /// A class's methods: asking makes the JVM give each one its `jmethodID`, which stack
    /// walks report from then on (a method without one is reported as null).
    pub fn class_methods(self, class: *mut c_void) -> Result<Allocated<*mut c_void>, i32> {
        type F =
            unsafe extern "C" fn(*mut c_void, *mut c_void, *mut i32, *mut *mut *mut c_void) -> i32;
        let (mut n, mut p) = (0, std::ptr::null_mut());
        // SAFETY: `GetClassMethods` is slot 51; `class` is a live reference to a class.
        Self::check(unsafe { slot::<F>(self.0, 51)(self.0, class, &mut n, &mut p) })?;
        Ok(self.allocated(p, n))
    }

    /// The calling thread's stack, innermost first, up to `out.len()` frames.
    pub fn stack_trace(self, out: &mut [FrameInfo]) -> Result<usize, i32> {
        type F = unsafe extern "C" fn(
            *mut c_void,
            *mut c_void,
            i32,
            i32,
            *mut FrameInfo,
            *mut i32,
        ) -> i32;
        let mut n = 0;
        let max = out.len().min(i32::MAX as usize) as i32;
        // SAFETY: `GetStackTrace` is slot 103; a null thread is the current one; it writes at
        // most `max` frames into `out`.
        let rc = unsafe {
            slot::<F>(self.0, 103)(
                self.0,
                std::ptr::null_mut(),
                0,
                max,
                out.as_mut_ptr(),
                &mut n,
            )
        };
        Self::check(rc).map(|()| (n.max(0) as usize).min(out.len()))
    }

    /// The class declaring `method` (a local reference the caller deletes).
    pub fn declaring_class(self, method: *mut c_void) -> Result<*mut c_void, i32> {
        type F = unsafe extern "C" fn(*mut c_void, *mut c_void, *mut *mut c_void) -> i32;
        let mut class = std::ptr::null_mut();
        // SAFETY: `GetMethodDeclaringClass` is slot 64; `method` is a jmethodID.
        Self::check(unsafe { slot::<F>(self.0, 64)(self.0, method, &mut class) })?;
        Ok(class)
    }

    /// A method's name (`readBatch`, `<init>`).
    pub fn method_name(self, method: *mut c_void) -> Result<Allocated<c_char>, i32> {
        type F = unsafe extern "C" fn(
            *mut c_void,
            *mut c_void,
            *mut *mut c_char,
            *mut *mut c_char,
            *mut *mut c_char,
        ) -> i32;
        let mut name = std::ptr::null_mut();
        let none = std::ptr::null_mut();
        // SAFETY: `GetMethodName` is slot 63; the signature and generic outputs may be null.
        Self::check(unsafe { slot::<F>(self.0, 63)(self.0, method, &mut name, none, none) })?;
        Ok(self.allocated(name, 1))
    }

    /// A class's signature (`Ljava/io/FileInputStream;`).
    pub fn class_signature(self, class: *mut c_void) -> Result<Allocated<c_char>, i32> {
        type F = unsafe extern "C" fn(
            *mut c_void,
            *mut c_void,
            *mut *mut c_char,
            *mut *mut c_char,
        ) -> i32;
        let mut sig = std::ptr::null_mut();
        // SAFETY: `GetClassSignature` is slot 47; the generic output may be null.
        let rc = unsafe { slot::<F>(self.0, 47)(self.0, class, &mut sig, std::ptr::null_mut()) };
        Self::check(rc)?;
        Ok(self.allocated(sig, 1))
    }

    /// The source file a class was compiled from (`Leak.java`), if it says.
    pub fn source_file(self, class: *mut c_void) -> Result<Allocated<c_char>, i32> {
        type F = unsafe extern "C" fn(*mut c_void, *mut c_void, *mut *mut c_char) -> i32;
        let mut name = std::ptr::null_mut();
        // SAFETY: `GetSourceFileName` is slot 49.
        Self::check(unsafe { slot::<F>(self.0, 49)(self.0, class, &mut name) })?;
        Ok(self.allocated(name, 1))
    }

    /// A method's line number table (none for a native method or a class compiled without).
    pub fn line_table(self, method: *mut c_void) -> Result<Allocated<LineEntry>, i32> {
        type F =
            unsafe extern "C" fn(*mut c_void, *mut c_void, *mut i32, *mut *mut LineEntry) -> i32;
        let (mut n, mut p) = (0, std::ptr::null_mut());
        // SAFETY: `GetLineNumberTable` is slot 69.
        Self::check(unsafe { slot::<F>(self.0, 69)(self.0, method, &mut n, &mut p) })?;
        Ok(self.allocated(p, n))
    }

    /// A system property of the JVM (`java.vm.version`).
    pub fn system_property(self, name: &CStr) -> Result<Allocated<c_char>, i32> {
        type F = unsafe extern "C" fn(*mut c_void, *const c_char, *mut *mut c_char) -> i32;
        let mut value = std::ptr::null_mut();
        // SAFETY: `GetSystemProperty` is slot 130; `name` is NUL-terminated.
        Self::check(unsafe { slot::<F>(self.0, 130)(self.0, name.as_ptr(), &mut value) })?;
        Ok(self.allocated(value, 1))
    }

    /// The calling thread's `java.lang.Thread` (a local reference).
    pub fn current_thread(self) -> Result<*mut c_void, i32> {
        type F = unsafe extern "C" fn(*mut c_void, *mut *mut c_void) -> i32;
        let mut thread = std::ptr::null_mut();
        // SAFETY: `GetCurrentThread` is slot 17.
        Self::check(unsafe { slot::<F>(self.0, 17)(self.0, &mut thread) })?;
        Ok(thread)
    }

    fn allocated<T>(self, ptr: *mut T, len: i32) -> Allocated<T> {
        Allocated {
            env: self,
            ptr,
            len: len.max(0) as usize,
        }
    }
}

impl Jni {
    /// Frees a local reference (JVM TI results are local references in the caller's frame,
    /// which a hook in a long native call must not let pile up).
    pub fn delete_local_ref(self, obj: *mut c_void) {
        type F = unsafe extern "C" fn(*mut c_void, *mut c_void);
        if !obj.is_null() {
            // SAFETY: `DeleteLocalRef` is slot 23; `obj` is a local reference of this thread.
            unsafe { slot::<F>(self.0, 23)(self.0, obj) };
        }
    }

    /// The value of the `long` field `name` of `obj` (`eetop` of a `java.lang.Thread`), if
    /// its class has one.
    pub fn long_field(self, obj: *mut c_void, name: &CStr) -> Option<i64> {
        type Class = unsafe extern "C" fn(*mut c_void, *mut c_void) -> *mut c_void;
        type Field = unsafe extern "C" fn(
            *mut c_void,
            *mut c_void,
            *const c_char,
            *const c_char,
        ) -> *mut c_void;
        type Long = unsafe extern "C" fn(*mut c_void, *mut c_void, *mut c_void) -> i64;
        type Check = unsafe extern "C" fn(*mut c_void) -> u8;
        type Clear = unsafe extern "C" fn(*mut c_void);
        // SAFETY: `GetObjectClass` (31), `GetFieldID` (94), `GetLongField` (101),
        // `ExceptionCheck` (228) and `ExceptionClear` (17) on a live local reference; a
        // missing field raises NoSuchFieldError, which is cleared.
        unsafe {
            let class = slot::<Class>(self.0, 31)(self.0, obj);
            if class.is_null() {
                return None;
            }
            let field = slot::<Field>(self.0, 94)(self.0, class, name.as_ptr(), c"J".as_ptr());
            self.delete_local_ref(class);
            if field.is_null() || slot::<Check>(self.0, 228)(self.0) != 0 {
                slot::<Clear>(self.0, 17)(self.0);
                return None;
            }
            Some(slot::<Long>(self.0, 101)(self.0, obj, field))
        }
    }
}
