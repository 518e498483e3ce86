package org.kerasdynamic.demo

import android.content.Context
import com.google.ai.edge.litert.Accelerator
import com.google.ai.edge.litert.Environment
import com.google.ai.edge.litert.TensorBuffer
import java.io.File
import org.kerasdynamic.core.Chain
import org.kerasdynamic.core.Export
import org.kerasdynamic.core.ExportLoader
import org.kerasdynamic.core.ExitRule
import org.kerasdynamic.core.ManifestException
import org.kerasdynamic.core.Policies
import org.kerasdynamic.core.SampleResult
import org.kerasdynamic.core.StageException
import org.kerasdynamic.core.Trace
import org.kerasdynamic.core.TraceParser

/** One sample as the phone ran it, next to what the Python runtime decided for it. */
class SampleOutcome(
    val index: Int,
    val target: Int?,
    val result: SampleResult,
    val pythonExit: String,
    val pythonLabel: Int,
    val staticNanos: Long?,
)

/**
 * The export bundled in the assets (by scripts/copy_export.py), loaded and verified by the
 * chain core, compiled for one accelerator, and run on the bundled samples.
 *
 * The verified model bytes are written to the app's private storage and compiled from there:
 * LiteRT compiles from a path, and only this app can write that folder, so what runs is what
 * was hashed.
 */
class DemoSession(context: Context, accelerator: Accelerator) : AutoCloseable {
    private val assets = AssetSource(context.assets, ASSET_FOLDER)
    val export: Export = ExportLoader.load(assets)
    val samples: Trace = loadSamples()
    private val environment = Environment.create()
    val compiler = ModelCompiler(environment, accelerator)
    private val folder = File(context.noBackupFilesDir, "export").apply {
        deleteRecursively()
        mkdirs()
    }
    private val files: Map<String, File> = export.files().mapValues { (path, bytes) ->
        File(folder, path.replace('/', '_')).apply { writeBytes(bytes) }
    }
    private val runner: LiteRtStageRunner = warmRunner()
    private val chain = Chain(export.manifest(), Policies.defaults(export.manifest()), runner)
    private val static: StaticModel? = if (assets.has(STATIC_NAME)) warmStatic() else null

    /** Accelerators LiteRT found on this device. */
    val available: Set<Accelerator> = environment.getAvailableAccelerators()

    /** MACs of a sample that runs every stage. */
    val totalMacs: Long = export.manifest().stages().values.sumOf { it.macs() }

    private fun loadSamples(): Trace {
        val bytes = assets.read(SAMPLES_NAME, MAX_SAMPLES_BYTES)
        val trace = TraceParser.parse(bytes, "${assets.describe()}/$SAMPLES_NAME")
        if (trace.manifestSha256() != export.manifestSha256() || trace.inputs() == null) {
            throw ManifestException(
                "$SAMPLES_NAME was not written for this manifest (or holds no inputs): " +
                    "copy the export again with scripts/copy_export.py.",
            )
        }
        return trace
    }

    /** Model inputs of sample [index] as buffers of [runner]. */
    private fun inputs(runner: LiteRtStageRunner, index: Int): Map<String, TensorBuffer> =
        export.manifest().inputs().associate { spec ->
            spec.name() to runner.modelInput(spec, samples.inputs()!!.getValue(spec.name()).row(index))
        }

    /**
     * A runner whose stages have run once (a sample through all stages, no early exit):
     * a stage the accelerator compiled but cannot run moves its file to the CPU here, before
     * anything is timed. With gates and routes, the branches that sample's decisions switch
     * off are not run here; such a branch first runs (and could first fail) on a later sample.
     */
    private fun warmRunner(): LiteRtStageRunner {
        val manifest = export.manifest()
        val neverExit = HashMap<String, ExitRule?>().apply { manifest.exits().forEach { put(it.name(), null) } }
        while (true) {
            val candidate = LiteRtStageRunner(manifest, files, compiler)
            try {
                Chain(manifest, Policies.merge(Policies.defaults(manifest), neverExit), candidate)
                    .run(inputs(candidate, 0))
                return candidate
            } catch (e: StageException) {
                candidate.close()
                val file = files.getValue(manifest.stage(e.stage()).file())
                if (!compiler.forceCpu(file, "stage '${e.stage()}' failed to run: ${e.cause?.message}")) throw e
            }
        }
    }

    private fun warmStatic(): StaticModel {
        val file = File(folder, STATIC_NAME).apply { writeBytes(assets.read(STATIC_NAME, Int.MAX_VALUE - 9L)) }
        while (true) {
            val model = StaticModel(file, compiler)
            try {
                model.time(staticInput(0))
                return model
            } catch (e: Exception) {
                model.close()
                if (!compiler.forceCpu(file, "failed to run: ${e.message}")) throw e
            }
        }
    }

    private fun staticInput(index: Int): FloatArray {
        val row = samples.inputs()!!.values.first().row(index)
        return FloatArray(row.size) { row[it].toFloat() }
    }

    /**
     * Runs sample [index] [repeats] times through the chain and the static model, alternating;
     * returns the chain run of median total time with the median static time.
     */
    fun run(index: Int, repeats: Int = 5): SampleOutcome {
        val runs = ArrayList<SampleResult>()
        val staticTimes = ArrayList<Long>()
        repeat(repeats) {
            runs += chain.run(inputs(runner, index))
            static?.let { staticTimes += it.time(staticInput(index)) }
        }
        val decisions = samples.runs()[0]
        return SampleOutcome(
            index = index,
            target = samples.targets()?.get(index),
            result = runs.sortedBy { it.totalNanos() }[repeats / 2],
            pythonExit = samples.exits()[decisions.exit(index)],
            pythonLabel = decisions.label(index),
            staticNanos = staticTimes.sorted().getOrNull(repeats / 2),
        )
    }

    override fun close() {
        runner.close()
        static?.close()
        environment.close()
    }

    companion object {
        const val ASSET_FOLDER = "export"
        const val SAMPLES_NAME = "samples.trace.json"
        const val STATIC_NAME = "static.tflite"
        const val MAX_SAMPLES_BYTES = 64L shl 20
    }
}
