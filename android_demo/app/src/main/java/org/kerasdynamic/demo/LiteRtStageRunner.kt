package org.kerasdynamic.demo

import com.google.ai.edge.litert.Accelerator
import com.google.ai.edge.litert.CompiledModel
import com.google.ai.edge.litert.TensorBuffer
import java.io.File
import java.util.IdentityHashMap
import org.kerasdynamic.core.DType
import org.kerasdynamic.core.Manifest
import org.kerasdynamic.core.StageRunner
import org.kerasdynamic.core.StageSpec
import org.kerasdynamic.core.TensorSpec

/**
 * Runs an export's stages with LiteRT's CompiledModel API: one compiled model per model file
 * (stages that are signatures of one file share it), each stage called by signature name with
 * its tensors addressed by name.
 *
 * Output buffers are made once per stage and reused for every sample. A stage's output goes
 * straight in as a later stage's input when both run on the CPU in the same compiled model;
 * otherwise (another file, or an accelerator whose buffers may live in its own memory) the
 * values are copied through the host into an input buffer of the consumer.
 *
 * The outputs of a stage a gate or route switched off (manifest version 2) are [zeros]: one
 * buffer per tensor, filled once with the real value 0 (the zero point of a quantized tensor)
 * and never written again, handed to the merges like any other output.
 */
class LiteRtStageRunner(
    private val manifest: Manifest,
    private val files: Map<String, File>,
    private val compiler: ModelCompiler,
) : StageRunner<TensorBuffer>, AutoCloseable {
    private val models = HashMap<String, CompiledModel>()
    private val outputs = HashMap<String, Map<String, TensorBuffer>>()
    private val copies = HashMap<String, TensorBuffer>()
    private val modelInputs = HashMap<String, TensorBuffer>()
    private val owners = IdentityHashMap<TensorBuffer, String>()
    private val zeroBuffers = HashMap<String, TensorBuffer>()

    init {
        for (stage in manifest.stages().values) {
            for (spec in stage.inputs() + stage.outputs()) {
                require(spec.dtype() in READABLE) {
                    "stage '${stage.name()}' tensor '${spec.name()}' is ${spec.dtype().jsonName()}; " +
                        "LiteRT's TensorBuffer reads and writes float32, int8, uint8, int32 and int64 only."
                }
            }
        }
    }

    /** The compiled model of [file], compiled on first use. */
    private fun model(file: String): CompiledModel =
        models.getOrPut(file) { compiler.compile(files.getValue(file)) }

    /** Writes one sample of model input [spec] and returns its buffer. */
    fun modelInput(spec: TensorSpec, values: DoubleArray): TensorBuffer {
        val buffer = modelInputs.getOrPut(spec.name()) {
            val stage = manifest.stages().values.first { s -> s.inputs().any { it.name() == spec.name() } }
            own(model(stage.file()).createInputBuffer(spec.name(), stage.signature()), stage.file())
        }
        write(buffer, spec, values)
        return buffer
    }

    override fun run(stage: StageSpec, inputs: Map<String, TensorBuffer>): Map<String, TensorBuffer> {
        val model = model(stage.file())
        val feeds = stage.inputs().associate { spec -> spec.name() to handOver(stage, spec, inputs.getValue(spec.name())) }
        val produced = outputs.getOrPut(stage.name()) {
            stage.outputs().associate { spec ->
                spec.name() to own(model.createOutputBuffer(spec.name(), stage.signature()), stage.file())
            }
        }
        model.run(feeds, produced, stage.signature())
        return produced
    }

    /** [buffer] itself where [stage]'s model can take it, else a copy in one of its own buffers. */
    private fun handOver(stage: StageSpec, spec: TensorSpec, buffer: TensorBuffer): TensorBuffer {
        val onCpu = compiler.placements()[files.getValue(stage.file()).name]?.used == Accelerator.CPU
        if (onCpu && owners[buffer] == stage.file()) return buffer
        val copy = copies.getOrPut("${stage.name()}/${spec.name()}") {
            own(model(stage.file()).createInputBuffer(spec.name(), stage.signature()), stage.file())
        }
        write(copy, spec, read(buffer, spec))
        return copy
    }

    override fun read(tensor: TensorBuffer, spec: TensorSpec): DoubleArray = when (spec.dtype()) {
        DType.FLOAT32 -> tensor.readFloat().let { v -> DoubleArray(v.size) { v[it].toDouble() } }
        DType.INT8 -> tensor.readInt8().let { v -> DoubleArray(v.size) { v[it].toDouble() } }
        DType.UINT8 -> tensor.readInt8().let { v -> DoubleArray(v.size) { (v[it].toInt() and 0xFF).toDouble() } }
        DType.INT32 -> tensor.readInt().let { v -> DoubleArray(v.size) { v[it].toDouble() } }
        DType.INT64 -> tensor.readLong().let { v -> DoubleArray(v.size) { v[it].toDouble() } }
        else -> throw IllegalArgumentException("unreadable dtype ${spec.dtype()}")
    }

    override fun zeros(spec: TensorSpec): TensorBuffer = zeroBuffers.getOrPut(spec.name()) {
        val stage = manifest.stage(manifest.producer(spec.name()))
        val buffer = own(model(stage.file()).createOutputBuffer(spec.name(), stage.signature()), stage.file())
        val fill = spec.quantization()?.zeroPoint()?.toDouble() ?: 0.0
        write(buffer, spec, DoubleArray(spec.elementsPerSample().toInt()) { fill })
        buffer
    }

    private fun write(buffer: TensorBuffer, spec: TensorSpec, values: DoubleArray) = when (spec.dtype()) {
        DType.FLOAT32 -> buffer.writeFloat(FloatArray(values.size) { values[it].toFloat() })
        DType.INT8, DType.UINT8 -> buffer.writeInt8(ByteArray(values.size) { values[it].toInt().toByte() })
        DType.INT32 -> buffer.writeInt(IntArray(values.size) { values[it].toInt() })
        DType.INT64 -> buffer.writeLong(LongArray(values.size) { values[it].toLong() })
        else -> throw IllegalArgumentException("unwritable dtype ${spec.dtype()}")
    }

    private fun own(buffer: TensorBuffer, file: String): TensorBuffer = buffer.also { owners[it] = file }

    override fun close() {
        owners.keys.forEach { it.close() }
        models.values.forEach { it.close() }
        owners.clear()
        models.clear()
        zeroBuffers.clear()
    }

    private companion object {
        val READABLE = setOf(DType.FLOAT32, DType.INT8, DType.UINT8, DType.INT32, DType.INT64)
    }
}
