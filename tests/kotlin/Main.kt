// The tests' Kotlin program over the SeqedgeModel class `seqedge package --target android` writes:
//   java ... MainKt ARTIFACT PROMPT MAX_TOKENS      prints prompt + continuation like seqedge_runner, then checks
// that the streamed pieces add up to the result, that a second generate() (state reset) repeats it, and that
// misuse raises SeqedgeException; each check prints one line on stderr.
import dev.seqedge.SeqedgeException
import dev.seqedge.SeqedgeModel
import java.nio.charset.StandardCharsets

fun main(args: Array<String>) {
    val (path, prompt, max) = Triple(args[0], args[1], args[2].toInt())
    val model = SeqedgeModel(path)
    val streamed = StringBuilder()
    val text = model.generate(prompt, max) { streamed.append(it) }
    System.out.write((prompt + text + "\n").toByteArray(StandardCharsets.UTF_8))
    System.out.flush()
    System.err.println("streamed-equals-result: ${streamed.toString() == text}")
    System.err.println("second-run-equal: ${model.generate(prompt, max) == text}")
    val ids = model.encode(prompt)
    model.reset()
    val first = model.prefill(ids)
    System.err.println("prefill-then-decode: ${first >= 0 && model.decode(first) >= 0 && model.logits().size > 0}")
    model.close()
    try {
        model.decode(1)
        System.err.println("closed-raises: false")
    } catch (e: SeqedgeException) {
        System.err.println("closed-raises: ${e.message}")
    }
    try {
        SeqedgeModel("$path/does-not-exist")
        System.err.println("missing-raises: false")
    } catch (e: SeqedgeException) {
        System.err.println("missing-raises: ${e.message}")
    }
}
