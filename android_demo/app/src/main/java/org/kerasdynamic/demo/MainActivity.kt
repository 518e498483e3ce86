package org.kerasdynamic.demo

import android.app.Activity
import android.graphics.Typeface
import android.os.Bundle
import android.view.View
import android.widget.AdapterView
import android.widget.ArrayAdapter
import android.widget.Button
import android.widget.ImageView
import android.widget.LinearLayout
import android.widget.ScrollView
import android.widget.Spinner
import android.widget.TextView
import com.google.ai.edge.litert.Accelerator
import java.util.Locale
import java.util.concurrent.ExecutorService
import java.util.concurrent.Executors
import org.kerasdynamic.core.SampleResult

/**
 * Runs the bundled export on the bundled samples and shows, per image: the prediction, the
 * exit taken and the Python runtime's decision for the same input, the latency of each stage
 * that ran against the static model's, the MACs run, and for gated or routed exports which
 * gate groups were on and which expert each route chose. An accelerator choice (CPU, GPU,
 * NPU) compiles the stages for it; where it refuses a stage, the summary says which and why.
 */
class MainActivity : Activity() {
    private val worker: ExecutorService = Executors.newSingleThreadExecutor()
    private lateinit var summary: TextView
    private lateinit var rows: LinearLayout
    private lateinit var runButton: Button
    private var accelerator = Accelerator.CPU

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        val padding = dp(12)
        val choice = Spinner(this).apply {
            adapter = ArrayAdapter(
                this@MainActivity, android.R.layout.simple_spinner_dropdown_item,
                CHOICES.map { it.first },
            )
            onItemSelectedListener = object : AdapterView.OnItemSelectedListener {
                override fun onItemSelected(parent: AdapterView<*>?, view: View?, position: Int, id: Long) {
                    accelerator = CHOICES[position].second
                }

                override fun onNothingSelected(parent: AdapterView<*>?) = Unit
            }
        }
        runButton = Button(this).apply {
            text = "Run"
            setOnClickListener { runAll() }
        }
        summary = TextView(this).apply { setPadding(0, padding, 0, padding) }
        rows = LinearLayout(this).apply { orientation = LinearLayout.VERTICAL }
        val controls = LinearLayout(this).apply {
            orientation = LinearLayout.HORIZONTAL
            addView(choice, LinearLayout.LayoutParams(0, LinearLayout.LayoutParams.WRAP_CONTENT, 1f))
            addView(runButton)
        }
        val page = LinearLayout(this).apply {
            orientation = LinearLayout.VERTICAL
            setPadding(padding, padding, padding, padding)
            addView(controls)
            addView(summary)
            addView(rows)
        }
        setContentView(ScrollView(this).apply { addView(page) })
        summary.text = "Choose an accelerator and press Run."
    }

    private fun runAll() {
        val chosen = accelerator
        runButton.isEnabled = false
        rows.removeAllViews()
        summary.text = "Loading and verifying the export, compiling for $chosen…"
        worker.execute {
            try {
                DemoSession(this, chosen).use { session ->
                    runOnUiThread { summary.text = header(session) }
                    val outcomes = ArrayList<SampleOutcome>()
                    for (index in 0 until session.samples.samples()) {
                        val outcome = session.run(index)
                        outcomes += outcome
                        runOnUiThread { rows.addView(row(session, outcome)) }
                    }
                    runOnUiThread { summary.text = header(session) + "\n" + totals(session, outcomes) }
                }
            } catch (e: Exception) {
                runOnUiThread { summary.text = "Failed: $e" }
            } finally {
                runOnUiThread { runButton.isEnabled = true }
            }
        }
    }

    private fun header(session: DemoSession): String {
        val manifest = session.export.manifest()
        val stages = manifest.stages().values.joinToString("\n") { stage ->
            val placement = session.compiler.placements()[stage.file().replace('/', '_')]
            "  ${stage.name()}: ${placement ?: "not compiled"}"
        }
        return "Accelerators on this device: ${session.available.joinToString()}\n" +
            "Stages (${session.compiler.requested} chosen):\n$stages\n" +
            "Static model: ${session.compiler.placements()[DemoSession.STATIC_NAME] ?: "not bundled"}"
    }

    private fun totals(session: DemoSession, outcomes: List<SampleOutcome>): String {
        val chain = outcomes.map { it.result.totalNanos() }.average()
        val agree = outcomes.count { it.result.exit() == it.pythonExit && it.result.label() == it.pythonLabel }
        val macs = outcomes.map { it.result.macs() }.average() / session.totalMacs
        val static = outcomes.mapNotNull { it.staticNanos }.takeIf { it.isNotEmpty() }?.average()
        val versus = static?.let { String.format(Locale.ROOT, " vs static %.0f µs (%.2fx)", it / 1e3, it / chain) } ?: ""
        return String.format(
            Locale.ROOT,
            "Mean latency %.0f µs%s; mean MACs %.0f%% of the full network; " +
                "same exit and label as the Python runtime for %d of %d samples.",
            chain / 1e3, versus, 100 * macs, agree, outcomes.size,
        )
    }

    private fun row(session: DemoSession, outcome: SampleOutcome): View {
        val result = outcome.result
        val stages = result.stages().zip(result.stageNanos().toList())
            .joinToString(" + ") { (name, nanos) -> String.format(Locale.ROOT, "%s %.0f µs", name, nanos / 1e3) }
        val static = outcome.staticNanos?.let {
            String.format(Locale.ROOT, " · static %.0f µs", it / 1e3)
        } ?: ""
        val python = if (result.exit() == outcome.pythonExit && result.label() == outcome.pythonLabel) {
            "same as Python"
        } else {
            "Python: ${outcome.pythonExit}, ${outcome.pythonLabel}"
        }
        val truth = outcome.target?.let { if (it == result.label()) " ✓" else " (true $it)" } ?: ""
        val decisions = decisionsLine(result)
        val text = TextView(this).apply {
            typeface = Typeface.MONOSPACE
            textSize = 12f
            setPadding(dp(8), 0, 0, 0)
            this.text = String.format(
                Locale.ROOT,
                "#%d  %d%s  exit %s (%s)\n%s = %.0f µs%s\nMACs %.0f%%%s",
                outcome.index, result.label(), truth, result.exit(), python, stages,
                result.totalNanos() / 1e3, static, 100.0 * result.macs() / session.totalMacs,
                decisions,
            )
        }
        val image = ImageView(this).apply {
            setImageBitmap(SampleImage.of(session.samples.inputs()!!.values.first(), outcome.index, dp(48)))
        }
        return LinearLayout(this).apply {
            orientation = LinearLayout.HORIZONTAL
            setPadding(0, dp(6), 0, dp(6))
            addView(image)
            addView(text)
        }
    }

    /**
     * The gate and route decisions of a gated or routed export (manifest version 2), e.g.
     * "gates block1 on, cg 1 0 · route experts 2"; empty for a chain of exits only. A gate
     * shows one digit per group; a route the expert chosen, "-" where the sample left first.
     */
    private fun decisionsLine(result: SampleResult): String {
        val gates = result.gates().entries.joinToString(", ") { (name, columns) ->
            if (columns.size == 1) {
                "$name ${if (columns[0]) "on" else "off"}"
            } else {
                "$name " + columns.joinToString(" ") { if (it) "1" else "0" }
            }
        }
        val routes = result.routes().entries.joinToString(", ") { (name, expert) ->
            "$name ${if (expert < 0) "-" else expert.toString()}"
        }
        val parts = listOfNotNull(
            gates.takeIf { it.isNotEmpty() }?.let { "gates $it" },
            routes.takeIf { it.isNotEmpty() }?.let { "route $it" },
        )
        return if (parts.isEmpty()) "" else "\n" + parts.joinToString(" · ")
    }

    private fun dp(value: Int): Int = (value * resources.displayMetrics.density).toInt()

    override fun onDestroy() {
        worker.shutdownNow()
        super.onDestroy()
    }

    private companion object {
        val CHOICES = listOf(
            "CPU (XNNPACK)" to Accelerator.CPU,
            "GPU" to Accelerator.GPU,
            "NPU" to Accelerator.NPU,
        )
    }
}
