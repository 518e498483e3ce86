package org.kerasdynamic.demo

import com.google.ai.edge.litert.Accelerator
import com.google.ai.edge.litert.CompiledModel
import com.google.ai.edge.litert.Environment
import com.google.ai.edge.litert.LiteRtException
import java.io.File

/** Where a model file runs: the accelerator asked for, the one used, and why they differ. */
data class Placement(val requested: Accelerator, val used: Accelerator, val reason: String?) {
    override fun toString(): String = when {
        reason != null -> "$used ($requested refused: $reason)"
        used == Accelerator.NPU -> "NPU (ops it cannot take run on the CPU)"
        else -> used.toString()
    }
}

/**
 * Compiles model files for the chosen accelerator. A file the accelerator refuses (the
 * compilation throws, or a stage of it later fails to run, see [forceCpu]) is compiled for
 * the CPU instead, and its [Placement] says so: the fallback is visible, never silent.
 *
 * Only the chosen accelerator is passed to LiteRT (not "GPU, then CPU"): with a CPU fallback
 * in the options LiteRT falls back by itself and the app could not tell. LiteRT adds the CPU
 * to an NPU-only choice itself, for ops the NPU compiler leaves out.
 */
class ModelCompiler(private val environment: Environment, val requested: Accelerator) {
    private val cpuReasons = HashMap<String, String>()
    private val placements = LinkedHashMap<String, Placement>()

    /** Placements of the files compiled so far, by file name. */
    fun placements(): Map<String, Placement> = placements

    fun compile(file: File): CompiledModel {
        val forced = cpuReasons[file.name]
        if (requested != Accelerator.CPU && forced == null) {
            try {
                val model = CompiledModel.create(file.absolutePath, CompiledModel.Options(requested), environment)
                placements[file.name] = Placement(requested, requested, null)
                return model
            } catch (e: LiteRtException) {
                cpuReasons[file.name] = e.message ?: e.toString()
            }
        }
        placements[file.name] = Placement(requested, Accelerator.CPU, cpuReasons[file.name])
        return CompiledModel.create(file.absolutePath, CompiledModel.Options(Accelerator.CPU), environment)
    }

    /**
     * Makes later compilations of [file] use the CPU because running it failed with [reason];
     * false if it already runs on the CPU (then there is nothing to fall back to).
     */
    fun forceCpu(file: File, reason: String): Boolean {
        if (placements[file.name]?.used == Accelerator.CPU) return false
        cpuReasons[file.name] = reason
        return true
    }
}
