package org.kerasdynamic.demo

import com.google.ai.edge.litert.CompiledModel
import com.google.ai.edge.litert.TensorBuffer
import java.io.File

/**
 * The same network as one static model (`converters.export_static`): every sample runs all of
 * it. Timed on the same accelerator as the chain, for comparison.
 */
class StaticModel(file: File, compiler: ModelCompiler) : AutoCloseable {
    private val model: CompiledModel = compiler.compile(file)
    private val inputs: List<TensorBuffer> = model.createInputBuffers()
    private val outputs: List<TensorBuffer> = model.createOutputBuffers()

    /**
     * Runs one float32 sample; returns the wall time of the run call in nanoseconds (the
     * chain's stage times cover their run calls the same way).
     */
    fun time(sample: FloatArray): Long {
        inputs[0].writeFloat(sample)
        val start = System.nanoTime()
        model.run(inputs, outputs)
        return System.nanoTime() - start
    }

    override fun close() {
        (inputs + outputs).forEach { it.close() }
        model.close()
    }
}
