package org.kerasdynamic.demo

import android.content.res.AssetManager
import java.io.FileNotFoundException
import org.kerasdynamic.core.FileIntegrityException
import org.kerasdynamic.core.FileSource
import org.kerasdynamic.core.Streams

/**
 * An export folder inside the APK's assets, read through the [AssetManager]. Assets hold
 * plain files only (no links, devices or FIFOs), so reading is all the checking there is here;
 * the core checks every path and hash.
 */
class AssetSource(private val assets: AssetManager, private val folder: String) : FileSource {
    override fun read(relativePath: String, maxBytes: Long): ByteArray {
        val limit = minOf(maxBytes + 1, Int.MAX_VALUE - 8L).toInt()
        return try {
            assets.open("$folder/$relativePath").use { Streams.readAtMost(it, limit) }
        } catch (e: FileNotFoundException) {
            throw FileIntegrityException("'$relativePath' is missing from ${describe()}.")
        }
    }

    override fun describe(): String = "assets/$folder"

    /** Whether the folder holds [name] (the optional files: the static model). */
    fun has(name: String): Boolean = assets.list(folder)?.contains(name) == true
}
