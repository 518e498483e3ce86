pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
}

dependencyResolutionManagement {
    repositoriesMode.set(RepositoriesMode.FAIL_ON_PROJECT_REPOS)
    repositories {
        // LiteRT is published on Google's Maven repository only.
        google()
        mavenCentral()
    }
}

rootProject.name = "keras-dynamic-demo"
include(":core", ":app")
