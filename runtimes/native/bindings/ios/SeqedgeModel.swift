// A seqedge ExecuTorch artifact in a Swift app: try SeqedgeModel(path:).generate(prompt, maxTokens:) { piece in }.
//
//     let model = try SeqedgeModel(path: Bundle.main.path(forResource: "model", ofType: nil)!)
//     let reply = try model.generate("What is the capital of France?", maxTokens: 48, chat: true) { print($0, terminator: "") }
//
// State is handled inside: prefill/decode continue the current sequence, reset() starts a new one, generate()
// resets first. Errors are SeqedgeError. One model is not safe to use from two threads at once.
import Foundation
import SeqedgeBridge

public struct SeqedgeError: Error, CustomStringConvertible {
    public let description: String
}

public final class SeqedgeModel {
    private let bridge: SeqedgeBridge
    private var last: Int64 = -1

    public init(path: String, threads: Int = 0) throws {
        do {
            bridge = try SeqedgeBridge(path: path, threads: threads)
        } catch {
            throw SeqedgeError(description: error.localizedDescription)
        }
        let eos = bridge.eosIds().map { $0.int64Value }
        let state = bridge.stateSizes().map { $0.int64Value }
        let expected = ModelInfo.state.map { $0.shape.reduce(Int64(1)) { $0 * Int64($1) } }
        if eos != ModelInfo.eosIds || state != expected {
            throw SeqedgeError(description: "\(path) is not the artifact this code was generated for (state sizes " +
                               "\(state), end-of-sequence ids \(eos); generated for \(expected), \(ModelInfo.eosIds)): " +
                               "run seqedge package again for it")
        }
    }

    public func encode(_ text: String, chat: Bool = false) throws -> [Int64] {
        do {
            return try bridge.encode(text, chat: chat).map { $0.int64Value }
        } catch {
            throw SeqedgeError(description: error.localizedDescription)
        }
    }

    /// Feed tokens after what was fed so far; returns the greedy next token.
    public func prefill(_ tokens: [Int64]) throws -> Int64 {
        guard let end = tokens.last else { throw SeqedgeError(description: "prefill needs at least one token") }
        last = end
        var error: NSError?
        let next = bridge.prefill(tokens.map { NSNumber(value: $0) }, error: &error)
        if let error { throw SeqedgeError(description: error.localizedDescription) }
        return next
    }

    /// Feed one token; returns the greedy next token.
    public func decode(_ token: Int64) throws -> Int64 {
        last = token
        var error: NSError?
        let next = bridge.decode(token, error: &error)
        if let error { throw SeqedgeError(description: error.localizedDescription) }
        return next
    }

    public func reset() {
        bridge.reset()
        last = -1
    }

    /// Greedy continuation of prompt (at most maxTokens tokens, stopping at end-of-sequence); onToken gets the
    /// text as it grows, whole characters only.
    public func generate(_ prompt: String, maxTokens: Int, chat: Bool = false,
                         onToken: (String) -> Void = { _ in }) throws -> String {
        reset()
        let ids = try encode(prompt, chat: chat)
        if ids.isEmpty { throw SeqedgeError(description: "the prompt encodes to no tokens") }
        var next = try prefill(ids)
        var all = Data()
        var pending = Data()
        for i in 0..<maxTokens {
            if bridge.isEos(next) { break }
            let piece = bridge.pieceAfter(last, token: next)
            all.append(piece)
            pending.append(piece)
            if let text = String(data: pending, encoding: .utf8) {  // whole characters: hand them out
                onToken(text)
                pending.removeAll()
            }
            if i + 1 == maxTokens { break }
            next = try decode(next)
        }
        return String(decoding: all, as: UTF8.self)
    }
}
