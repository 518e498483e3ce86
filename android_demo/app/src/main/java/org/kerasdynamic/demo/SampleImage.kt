package org.kerasdynamic.demo

import android.graphics.Bitmap
import android.graphics.Color
import org.kerasdynamic.core.Trace

/** A bundled sample as a bitmap for display: gray for one channel, RGB for three. */
object SampleImage {
    fun of(input: Trace.Samples, index: Int, side: Int): Bitmap {
        val shape = input.sampleShape()
        require(shape.size == 3 && (shape[2] == 1 || shape[2] == 3)) {
            "only (height, width, 1 or 3) images are shown; the input is ${shape.contentToString()}"
        }
        val (height, width, channels) = Triple(shape[0], shape[1], shape[2])
        val values = input.row(index)
        // Stretch to 0..255 whatever the input's range.
        val low = values.minOrNull() ?: 0.0
        val span = ((values.maxOrNull() ?: 1.0) - low).takeIf { it > 0 } ?: 1.0
        fun level(i: Int) = ((values[i] - low) / span * 255).toInt().coerceIn(0, 255)
        val pixels = IntArray(height * width) { p ->
            if (channels == 1) {
                level(p).let { Color.rgb(it, it, it) }
            } else {
                Color.rgb(level(3 * p), level(3 * p + 1), level(3 * p + 2))
            }
        }
        val bitmap = Bitmap.createBitmap(pixels, width, height, Bitmap.Config.ARGB_8888)
        return Bitmap.createScaledBitmap(bitmap, side, side * height / width, false)
    }
}
