// The JNI bridge: dev.seqedge.SeqedgeNative's external functions over seqedge::Engine. Kotlin's
// SeqedgeModel (written by `seqedge package --target android`) is the only caller; it holds the handle.
//
// Text crosses as UTF-8 byte arrays (JNI's own strings are "modified UTF-8"), token ids as longs. A
// seqedge::Error (or any C++ exception) becomes a dev.seqedge.SeqedgeException with the same message: nothing
// is thrown through the JVM's frames.

#include <jni.h>

#include <cstdint>
#include <exception>
#include <string>
#include <vector>

#include "seqedge_engine.h"

namespace {

void throw_java(JNIEnv* env, const char* message) {
  jclass cls = env->FindClass("dev/seqedge/SeqedgeException");
  if (cls == nullptr) {  // FindClass left a NoClassDefFoundError pending: report the original instead
    env->ExceptionClear();
    cls = env->FindClass("java/lang/RuntimeException");
  }
  env->ThrowNew(cls, message);
}

// Run `body`, turning C++ exceptions into a pending Java exception and returning `fallback` then.
template <class T, class F>
T guarded(JNIEnv* env, T fallback, F&& body) {
  try {
    return body();
  } catch (const std::exception& e) {
    throw_java(env, e.what());
  } catch (...) {
    throw_java(env, "seqedge: unknown native error");
  }
  return fallback;
}

seqedge::Engine& engine(JNIEnv*, jlong handle) {
  if (handle == 0) throw seqedge::Error("this SeqedgeModel is closed");
  return *reinterpret_cast<seqedge::Engine*>(handle);
}

std::string bytes_of(JNIEnv* env, jbyteArray array) {
  const jsize n = env->GetArrayLength(array);
  std::string out(size_t(n), '\0');
  env->GetByteArrayRegion(array, 0, n, reinterpret_cast<jbyte*>(out.data()));
  return out;
}

jbyteArray to_bytes(JNIEnv* env, const std::string& s) {
  jbyteArray out = env->NewByteArray(jsize(s.size()));
  env->SetByteArrayRegion(out, 0, jsize(s.size()), reinterpret_cast<const jbyte*>(s.data()));
  return out;
}

jlongArray to_longs(JNIEnv* env, const std::vector<int64_t>& v) {
  jlongArray out = env->NewLongArray(jsize(v.size()));
  std::vector<jlong> tmp(v.begin(), v.end());
  env->SetLongArrayRegion(out, 0, jsize(tmp.size()), tmp.data());
  return out;
}

}  // namespace

extern "C" {

JNIEXPORT jlong JNICALL Java_dev_seqedge_SeqedgeNative_open(JNIEnv* env, jclass, jstring path, jint threads) {
  return guarded<jlong>(env, 0, [&] {
    const char* chars = env->GetStringUTFChars(path, nullptr);
    std::string folder(chars);
    env->ReleaseStringUTFChars(path, chars);
    return reinterpret_cast<jlong>(new seqedge::Engine(folder, threads));
  });
}

JNIEXPORT void JNICALL Java_dev_seqedge_SeqedgeNative_close(JNIEnv*, jclass, jlong handle) {
  delete reinterpret_cast<seqedge::Engine*>(handle);
}

JNIEXPORT jlongArray JNICALL Java_dev_seqedge_SeqedgeNative_encode(JNIEnv* env, jclass, jlong handle, jbyteArray text,
                                                                  jboolean chat) {
  return guarded<jlongArray>(env, nullptr, [&] { return to_longs(env, engine(env, handle).encode(bytes_of(env, text), chat)); });
}

JNIEXPORT jlong JNICALL Java_dev_seqedge_SeqedgeNative_prefill(JNIEnv* env, jclass, jlong handle, jlongArray ids) {
  return guarded<jlong>(env, -1, [&] {
    const jsize n = env->GetArrayLength(ids);
    std::vector<jlong> tmp(static_cast<size_t>(n));
    env->GetLongArrayRegion(ids, 0, n, tmp.data());
    return jlong(engine(env, handle).prefill(std::vector<int64_t>(tmp.begin(), tmp.end())));
  });
}

JNIEXPORT jlong JNICALL Java_dev_seqedge_SeqedgeNative_decode(JNIEnv* env, jclass, jlong handle, jlong id) {
  return guarded<jlong>(env, -1, [&] { return jlong(engine(env, handle).decode(id)); });
}

JNIEXPORT jbyteArray JNICALL Java_dev_seqedge_SeqedgeNative_piece(JNIEnv* env, jclass, jlong handle, jlong prev, jlong id) {
  return guarded<jbyteArray>(env, nullptr, [&] { return to_bytes(env, engine(env, handle).piece(prev, id)); });
}

JNIEXPORT jboolean JNICALL Java_dev_seqedge_SeqedgeNative_isEos(JNIEnv* env, jclass, jlong handle, jlong id) {
  return guarded<jboolean>(env, JNI_FALSE, [&] { return jboolean(engine(env, handle).is_eos(id)); });
}

JNIEXPORT jlongArray JNICALL Java_dev_seqedge_SeqedgeNative_eosIds(JNIEnv* env, jclass, jlong handle) {
  return guarded<jlongArray>(env, nullptr, [&] { return to_longs(env, engine(env, handle).eos_ids()); });
}

JNIEXPORT jlongArray JNICALL Java_dev_seqedge_SeqedgeNative_stateSizes(JNIEnv* env, jclass, jlong handle) {
  return guarded<jlongArray>(env, nullptr, [&] { return to_longs(env, engine(env, handle).state_sizes()); });
}

JNIEXPORT void JNICALL Java_dev_seqedge_SeqedgeNative_reset(JNIEnv* env, jclass, jlong handle) {
  guarded<int>(env, 0, [&] {
    engine(env, handle).reset();
    return 0;
  });
}

JNIEXPORT jfloatArray JNICALL Java_dev_seqedge_SeqedgeNative_logits(JNIEnv* env, jclass, jlong handle) {
  return guarded<jfloatArray>(env, nullptr, [&] {
    const auto& l = engine(env, handle).logits();
    jfloatArray out = env->NewFloatArray(jsize(l.size()));
    env->SetFloatArrayRegion(out, 0, jsize(l.size()), l.data());
    return out;
  });
}

}  // extern "C"
