// A seqedge ExecuTorch artifact in a Kotlin app: SeqedgeModel(path).generate(prompt, maxTokens) { piece -> ... }.
//
//     SeqedgeModel(filesDir.resolve("model").path).use { model ->
//         val reply = model.generate("What is the capital of France?", maxTokens = 48, chat = true) { print(it) }
//     }
//
// The work happens in libseqedge_jni.so (seqedge's engine over the ExecuTorch C++ runtime): tokenizer, prefill,
// decode, the recurrent state and KV caches. State is handled inside: prefill/decode continue the current
// sequence, reset() starts a new one, generate() resets first. Errors are SeqedgeException. One model is not
// safe to use from two threads at once; two models are independent.
package dev.seqedge

import java.io.ByteArrayOutputStream
import java.nio.ByteBuffer
import java.nio.CharBuffer
import java.nio.charset.CodingErrorAction
import java.nio.charset.StandardCharsets

class SeqedgeException(message: String) : RuntimeException(message)

/** The JNI entry points (runtimes/native/bindings/android/seqedge_jni.cpp); only SeqedgeModel calls them. */
internal object SeqedgeNative {
    init {
        System.loadLibrary("seqedge_jni")
    }

    @JvmStatic external fun open(path: String, threads: Int): Long
    @JvmStatic external fun close(handle: Long)
    @JvmStatic external fun encode(handle: Long, text: ByteArray, chat: Boolean): LongArray
    @JvmStatic external fun prefill(handle: Long, ids: LongArray): Long
    @JvmStatic external fun decode(handle: Long, id: Long): Long
    @JvmStatic external fun piece(handle: Long, prev: Long, id: Long): ByteArray
    @JvmStatic external fun isEos(handle: Long, id: Long): Boolean
    @JvmStatic external fun eosIds(handle: Long): LongArray
    @JvmStatic external fun stateSizes(handle: Long): LongArray
    @JvmStatic external fun reset(handle: Long)
    @JvmStatic external fun logits(handle: Long): FloatArray
}

class SeqedgeModel(path: String, threads: Int = 0) : AutoCloseable {
    private var handle: Long = SeqedgeNative.open(path, threads)
    private var last: Long = -1  // the last token fed: the context `piece` decodes the next one in

    init {
        // the code was generated for one artifact (ModelInfo): refuse another with a different interface
        val eos = SeqedgeNative.eosIds(handle)
        val state = SeqedgeNative.stateSizes(handle).toList()
        val expected = ModelInfo.STATE.map { s -> s.shape.fold(1L) { n, d -> n * d } }
        if (!eos.contentEquals(ModelInfo.EOS_IDS) || state != expected) {
            close()
            throw SeqedgeException("$path is not the artifact this code was generated for (state sizes $state, " +
                "end-of-sequence ids ${eos.toList()}; generated for $expected, ${ModelInfo.EOS_IDS.toList()}): " +
                "run seqedge package again for it")
        }
    }

    private fun live(): Long {
        if (handle == 0L) throw SeqedgeException("this SeqedgeModel is closed")
        return handle
    }

    /** Text -> token ids (with the model's chat template around it when chat is true). */
    fun encode(text: String, chat: Boolean = false): LongArray =
        SeqedgeNative.encode(live(), text.toByteArray(StandardCharsets.UTF_8), chat)

    /** Feed tokens after what was fed so far; returns the greedy next token. */
    fun prefill(tokens: LongArray): Long {
        require(tokens.isNotEmpty()) { "prefill needs at least one token" }
        last = tokens.last()
        return SeqedgeNative.prefill(live(), tokens)
    }

    /** Feed one token; returns the greedy next token. */
    fun decode(token: Long): Long {
        last = token
        return SeqedgeNative.decode(live(), token)
    }

    /** The last position's logits of the last prefill/decode. */
    fun logits(): FloatArray = SeqedgeNative.logits(live())

    fun isEos(token: Long): Boolean = SeqedgeNative.isEos(live(), token)

    /** The bytes `token` adds to the text after `prev` (part of a UTF-8 character, sometimes). */
    fun pieceBytes(prev: Long, token: Long): ByteArray = SeqedgeNative.piece(live(), prev, token)

    /** Start a new sequence: state to zeros, position 0. */
    fun reset() {
        SeqedgeNative.reset(live())
        last = -1
    }

    /**
     * Greedy continuation of prompt, at most maxTokens tokens, stopping at end-of-sequence. onToken gets the
     * text as it grows (whole UTF-8 characters only). Returns the whole continuation.
     */
    fun generate(prompt: String, maxTokens: Int, chat: Boolean = false, onToken: (String) -> Unit = {}): String {
        reset()
        val ids = encode(prompt, chat)
        if (ids.isEmpty()) throw SeqedgeException("the prompt encodes to no tokens")
        var next = prefill(ids)
        val all = ByteArrayOutputStream()
        val decoder = StandardCharsets.UTF_8.newDecoder()
            .onMalformedInput(CodingErrorAction.REPLACE).onUnmappableCharacter(CodingErrorAction.REPLACE)
        var pending = ByteArray(0)
        for (i in 0 until maxTokens) {
            if (isEos(next)) break
            val bytes = pieceBytes(last, next)
            all.write(bytes)
            // hand out whole characters: bytes of an unfinished UTF-8 sequence wait for the next piece
            val input = ByteBuffer.wrap(pending + bytes)
            val out = CharBuffer.allocate(input.remaining() + 1)
            decoder.decode(input, out, false)
            pending = ByteArray(input.remaining()).also { input.get(it) }
            out.flip()
            if (out.hasRemaining()) onToken(out.toString())
            if (i + 1 == maxTokens) break
            next = decode(next)
        }
        if (pending.isNotEmpty()) {  // an unfinished character at the end: replaced, as in the result
            val out = CharBuffer.allocate(pending.size + 1)
            decoder.decode(ByteBuffer.wrap(pending), out, true)
            decoder.flush(out)
            out.flip()
            onToken(out.toString())
        }
        return String(all.toByteArray(), StandardCharsets.UTF_8)
    }

    override fun close() {
        if (handle != 0L) {
            SeqedgeNative.close(handle)
            handle = 0L
        }
    }
}
