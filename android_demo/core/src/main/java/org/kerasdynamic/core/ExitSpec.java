package org.kerasdynamic.core;

/**
 * An exit of the manifest: the stage it lives in, the tensor holding its logits, and its
 * default rule (null: never leave early here).
 */
public final class ExitSpec {
  private final String name;
  private final String stage;
  private final String tensor;
  private final ExitRule policy;

  ExitSpec(String name, String stage, String tensor, ExitRule policy) {
    this.name = name;
    this.stage = stage;
    this.tensor = tensor;
    this.policy = policy;
  }

  public String name() {
    return name;
  }

  public String stage() {
    return stage;
  }

  /** The stage output holding the exit's (batch, classes) logits. */
  public String tensor() {
    return tensor;
  }

  /** The manifest's default rule, or null. */
  public ExitRule policy() {
    return policy;
  }
}
