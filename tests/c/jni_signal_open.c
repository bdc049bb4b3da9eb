/* JNI methods of tests/java/SignalOpen.java: one opens a file from inside a signal handler
   (which may have interrupted anything, malloc included: fdguard must not call the JVM there),
   the other opens one directly. Each returns the fd, which it never closes. */
#include <fcntl.h>
#include <jni.h>
#include <signal.h>
#include <string.h>

static char path[4096];
static volatile int opened = -1;

static void on_signal(int sig) {
    (void)sig;
    opened = open(path, O_RDONLY);
}

static void copy_path(JNIEnv *env, jstring p) {
    const char *s = (*env)->GetStringUTFChars(env, p, NULL);
    strncpy(path, s, sizeof path - 1);
    (*env)->ReleaseStringUTFChars(env, p, s);
}

JNIEXPORT jint JNICALL Java_SignalOpen_openInHandler(JNIEnv *env, jclass c, jstring p) {
    (void)c;
    copy_path(env, p);
    struct sigaction a;
    memset(&a, 0, sizeof a);
    a.sa_handler = on_signal;
    if (sigaction(SIGUSR1, &a, NULL) != 0) return -1;
    raise(SIGUSR1);
    return opened;
}

JNIEXPORT jint JNICALL Java_SignalOpen_openDirectly(JNIEnv *env, jclass c, jstring p) {
    (void)c;
    copy_path(env, p);
    return open(path, O_RDONLY);
}
